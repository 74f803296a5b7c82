-- Commits written blocks: swaps new object ids into the block map and grows
-- the size, in the same step that updates mtime/ctime. Replaced objects go to
-- the trash (deleted after a grace period: readers may still hold the old map).
-- KEYS[1] i:INO  KEYS[2] m:INO  KEYS[3] usage  KEYS[4] trash
-- ARGV[1] new mtime/ctime (ns): the time of the last buffered write
-- ARGV[2] now (ms)  ARGV[3] minimum size after the write
-- ARGV[4..] triples: block index, object id, valid bytes
-- Returns {0, size, version, {attribute field, value, ...}} or {ENOENT} (the inode is
-- gone; nothing changed).
if redis.call('EXISTS', KEYS[1]) == 0 then return {ENOENT} end
local delta = 0
for k = 4, #ARGV, 3 do
  local old = redis.call('HGET', KEYS[2], ARGV[k])
  if old then
    local obj, valid = string.match(old, '^(%d+):(%d+)$')
    -- A replay of this very commit (the reply was lost and the client retried)
    -- finds its own object here: it must not be trashed.
    if obj ~= ARGV[k + 1] then redis.call('ZADD', KEYS[4], ARGV[2], obj) end
    delta = delta - tonumber(valid)
  end
  redis.call('HSET', KEYS[2], ARGV[k], ARGV[k + 1] .. ':' .. ARGV[k + 2])
  delta = delta + tonumber(ARGV[k + 2])
end
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', delta)
  redis.call('HINCRBY', KEYS[3], 'bytes', delta)
end
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local minsize = tonumber(ARGV[3])
if minsize > size then
  size = minsize
  redis.call('HSET', KEYS[1], 'size', ARGV[3])
end
touch(KEYS[1], ARGV[1], true)
return {0, size, redis.call('HGET', KEYS[1], 'version'), redis.call('HGETALL', KEYS[1])}
