-- Releases a lock if (and only if) the caller still owns it.
-- KEYS[1] lock key
-- ARGV[1] owner token
-- Returns {0, 1} when released, {0, 0} when the lock was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {0, 1}
end
return {0, 0}
