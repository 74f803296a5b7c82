#!lua flags=allow-oom
-- Registers a session: its description and its lease. Runs on a full Redis too
-- (allow-oom; see session_id.lua): it stores a few short fields.
-- KEYS[1] sess:SID  KEYS[2] sessions
-- ARGV[1] session id  ARGV[2] lease expiry (ms)  ARGV[3..] field, value pairs
-- Returns {0}.
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {0}
