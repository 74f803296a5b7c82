#!lua flags=allow-oom
-- Renews a session's lease; runs on a full Redis too (it only rescores an
-- existing member), so that a mount whose writes fail for lack of memory is not
-- declared dead. XX: a session already reclaimed by another node stays dead.
-- KEYS[1] sessions
-- ARGV[1] session id  ARGV[2] new lease expiry (ms)
-- Returns {0, 1} when renewed, {0, 0} when the session is no longer registered.
return {0, redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1])}
