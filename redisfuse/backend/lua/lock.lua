-- Takes a lock for an owner token, or renews it if the owner already holds it.
-- KEYS[1] lock key
-- ARGV[1] owner token  ARGV[2] TTL (ms)
-- Returns {0, 1} when taken (or renewed), {0, 0, ms left} when someone else holds it.
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0, 1}
end
return {0, 0, redis.call('PTTL', KEYS[1])}
