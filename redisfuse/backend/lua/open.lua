#!lua flags=allow-oom
-- Registers an open handle of the calling session and returns fresh
-- attributes (close-to-open consistency: the caller compares versions) and
-- the first entries of the block map (so that the first read needs no map
-- round trip).
-- Runs on a full Redis too (allow-oom): files stay readable there; it only counts.
-- KEYS[1] i:INO  KEYS[2] open:SID  KEYS[3] m:INO
-- ARGV[1] ino  ARGV[2..] block indexes to return
-- Returns {0, {attribute field, value, ...}, {map value or false per index}} or
-- {ENOENT}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {ENOENT} end
redis.call('HINCRBY', KEYS[1], 'opens', 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local map = {}
if #ARGV > 1 then map = redis.call('HMGET', KEYS[3], unpack(ARGV, 2)) end
return {0, redis.call('HGETALL', KEYS[1]), map}
