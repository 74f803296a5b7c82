-- Sets or removes one extended attribute.
-- KEYS[1] x:INO  KEYS[2] i:INO
-- ARGV[1] name  ARGV[2] value  ARGV[3] flags (1 XATTR_CREATE, 2 XATTR_REPLACE,
-- 4 remove)  ARGV[4] now (ns)
-- Returns {0} or {errno} (EEXIST, ENODATA, ENOENT).
if redis.call('EXISTS', KEYS[2]) == 0 then return {ENOENT} end
local flags = tonumber(ARGV[3])
local present = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if bit.band(flags, 4) ~= 0 then
  if not present then return {ENODATA} end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  if bit.band(flags, 1) ~= 0 and present then return {EEXIST} end
  if bit.band(flags, 2) ~= 0 and not present then return {ENODATA} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('HSET', KEYS[2], 'xattrs', redis.call('HLEN', KEYS[1]))
touch(KEYS[2], ARGV[4], false)
return {0}
