#!lua flags=allow-oom
-- Renews a session's lease; runs on a full Redis too (it only rescores an
-- existing member), so that a mount whose writes fail for lack of memory is not
-- declared dead. XX: a session already reclaimed by another node stays dead.
-- It also publishes the session's retry count, for `redisfuse status`.
-- KEYS[1] sessions  KEYS[2] sess:SID
-- ARGV[1] session id  ARGV[2] new lease expiry (ms)  ARGV[3] Redis commands
-- retried so far by this session's client
-- Returns {0, 1} when renewed, {0, 0} when the session is no longer registered.
-- (Membership is asked, not ZADD's count of changed scores: a heartbeat sent
-- again after a lost reply sets the same score, which changes nothing.)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0, 0} end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'retries', ARGV[3])
return {0, 1}
