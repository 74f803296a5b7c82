-- Renews a lock's TTL if (and only if) the caller still owns it.
-- KEYS[1] lock key
-- ARGV[1] owner token  ARGV[2] new TTL (ms)
-- Returns {0, 1} when renewed, {0, 0} when the lock was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, 1}
end
return {0, 0}
