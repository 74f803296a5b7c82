-- Reads what a read needs in one round trip: size, version and a range of
-- the block map.
-- KEYS[1] i:INO  KEYS[2] m:INO
-- ARGV[1..] block indexes
-- Returns {0, size, version, {value or false per index}} or {ENOENT}.
local a = redis.call('HMGET', KEYS[1], 'size', 'version')
if not a[1] then return {ENOENT} end
local vals = {}
if #ARGV > 0 then vals = redis.call('HMGET', KEYS[2], unpack(ARGV)) end
return {0, a[1], a[2], vals}
