#!lua flags=allow-oom
-- Renews a session's lease; runs on a full Redis too (it only rescores an
-- existing member), so that a mount whose writes fail for lack of memory is not
-- declared dead. XX: a session already reclaimed by another node stays dead.
-- It also publishes the session's retry count, for `redisfuse status`.
-- KEYS[1] sessions  KEYS[2] sess:SID
-- ARGV[1] session id  ARGV[2] new lease expiry (ms)  ARGV[3] Redis commands
-- retried so far by this session's client
-- Returns {0, 1} when renewed, {0, 0} when the session is no longer registered.
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1])
if renewed == 1 then redis.call('HSET', KEYS[2], 'retries', ARGV[3]) end
return {0, renewed}
