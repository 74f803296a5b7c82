-- Commits written blocks: swaps new object ids into the block map and grows
-- the size, in the same step that updates mtime/ctime. Replaced objects go to
-- the trash (deleted after a grace period: readers may still hold the old map).
-- Nothing changes unless every new object is in Redis: the objects' SETs travel
-- in the same pipeline, and on a full Redis some of them fail while this script
-- may still run, which must never leave the map pointing at nothing.
-- KEYS[1] i:INO  KEYS[2] m:INO  KEYS[3] usage  KEYS[4] trash  KEYS[5] setting
-- KEYS[6..] o:OBJ of each new object, in the order of the triples below
-- ARGV[1] new mtime/ctime (ns): the time of the last buffered write
-- ARGV[2] now (ms)  ARGV[3] minimum size after the write
-- ARGV[4..] quadruples: block index, object id, valid bytes, base: the map value
--   the block was built on ('' for none), or '*' for a block written in full
-- Returns {0, size, version, {attribute field, value, ...}}; {ENOENT} (the inode
-- is gone), {EIO, n} (the n-th new object is missing), {ENOSPC} (the volume's
-- byte quota would be exceeded) or {STALE, index, ...} (these blocks' map values
-- are no longer their bases: the caller merges them afresh and commits again),
-- with nothing changed.
if redis.call('EXISTS', KEYS[1]) == 0 then return {ENOENT} end
for k = 6, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 0 then return {EIO, k - 5} end
end
local olds = {}
local stale = {STALE}
local delta = 0
for k = 4, #ARGV, 4 do
  local old = redis.call('HGET', KEYS[2], ARGV[k])
  olds[k] = old
  local base = ARGV[k + 3]
  if base ~= '*' and (old or '') ~= base then stale[#stale + 1] = ARGV[k] end
  if old then
    local _, valid = string.match(old, '^(%d+):(%d+)$')
    delta = delta - tonumber(valid)
  end
  delta = delta + tonumber(ARGV[k + 2])
end
if #stale > 1 then return stale end
if delta > 0 and over_quota(KEYS[5], KEYS[3], 'bytes', delta) then return {ENOSPC} end
for k = 4, #ARGV, 4 do
  local old = olds[k]
  if old then
    local obj = string.match(old, '^(%d+):')
    -- A replay of this very commit (the reply was lost and the client retried)
    -- finds its own object here: it must not be trashed.
    if obj ~= ARGV[k + 1] then redis.call('ZADD', KEYS[4], ARGV[2], obj) end
  end
  redis.call('HSET', KEYS[2], ARGV[k], ARGV[k + 1] .. ':' .. ARGV[k + 2])
end
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', delta)
  redis.call('HINCRBY', KEYS[3], 'bytes', delta)
end
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local minsize = tonumber(ARGV[3])
if minsize > size then
  size = minsize
  redis.call('HSET', KEYS[1], 'size', ARGV[3])
end
touch(KEYS[1], ARGV[1], true)
return {0, size, redis.call('HGET', KEYS[1], 'version'), redis.call('HGETALL', KEYS[1])}
