-- Registers an open handle of the calling session and returns fresh
-- attributes (close-to-open consistency: the caller compares versions).
-- KEYS[1] i:INO  KEYS[2] open:SID
-- ARGV[1] ino
-- Returns {0, {attribute field, value, ...}} or {ENOENT}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {ENOENT} end
redis.call('HINCRBY', KEYS[1], 'opens', 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {0, redis.call('HGETALL', KEYS[1])}
