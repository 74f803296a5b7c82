-- Resolves a name in a directory and returns the child's attributes in one
-- round trip.
-- KEYS[1] d:PARENT  KEYS[2] i:PARENT
-- ARGV[1] name  ARGV[2] the volume's key prefix ("rf:{VOL}:")
-- ARGV[3] the most names a miss may return (0: none)
-- Returns {0, child ino, {attribute field, value, ...}}, or for a missing name
-- in a directory of at most ARGV[3] entries {0, 0, {every name}} (so that the
-- caller knows the next misses there without asking), or {errno}.
-- The child's key is built here from ARGV[2]: the one script that reads a key
-- it cannot know in advance. It carries the same hash tag as KEYS, so it lives
-- in the same Cluster slot (see docs/architecture.md). It only reads.
local err = check_dir(KEYS[2])
if err then return {err} end
local child = entry_ino(redis.call('HGET', KEYS[1], ARGV[1]))
if not child then
  local most = tonumber(ARGV[3])
  if most > 0 and redis.call('HLEN', KEYS[1]) <= most then
    return {0, 0, redis.call('HKEYS', KEYS[1])}
  end
  return {ENOENT}
end
local attrs = redis.call('HGETALL', ARGV[2] .. 'i:' .. child)
if #attrs == 0 then return {EIO, child} end
return {0, child, attrs}
