#!lua flags=allow-oom
-- Changes attributes; a size change truncates or extends the block map.
-- Runs on a full Redis too (allow-oom): it rewrites existing fields, and a truncation frees space.
-- KEYS[1] i:INO  KEYS[2] m:INO  KEYS[3] usage  KEYS[4] trash
-- ARGV[1] now (ns)  ARGV[2] now (ms)  ARGV[3] mode  ARGV[4] uid  ARGV[5] gid
-- ARGV[6] size  ARGV[7] atime  ARGV[8] mtime  ARGV[9] ctime  ARGV[10] block size
-- ('' leaves a field unchanged)
-- Returns {0, {attribute field, value, ...}} or {errno}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {ENOENT} end
local now = ARGV[1]
if ARGV[3] ~= '' then   -- permission bits only; the file type never changes
  local old = tonumber(redis.call('HGET', KEYS[1], 'mode'))
  redis.call('HSET', KEYS[1], 'mode', bit.bor(bit.band(old, S_IFMT), bit.band(tonumber(ARGV[3]), 0xFFF)))
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'uid', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'gid', ARGV[5]) end
if ARGV[6] ~= '' then
  local newsize = tonumber(ARGV[6])
  local oldsize = tonumber(redis.call('HGET', KEYS[1], 'size'))
  if newsize < oldsize then
    local bs = tonumber(ARGV[10])
    local keep = math.floor((newsize + bs - 1) / bs)      -- blocks [0, keep) stay
    local tail = newsize - (keep - 1) * bs                 -- valid bytes of the last kept block
    local freed = 0
    local map = redis.call('HGETALL', KEYS[2])
    for k = 1, #map, 2 do
      local idx = tonumber(map[k])
      local obj, valid = string.match(map[k + 1], '^(%d+):(%d+)$')
      valid = tonumber(valid)
      if idx >= keep then
        redis.call('HDEL', KEYS[2], map[k])
        redis.call('ZADD', KEYS[4], ARGV[2], obj)
        freed = freed + valid
      elseif idx == keep - 1 and valid > tail then
        redis.call('HSET', KEYS[2], map[k], obj .. ':' .. tail)
        freed = freed + valid - tail
      end
    end
    redis.call('HINCRBY', KEYS[1], 'bytes', 0 - freed)
    redis.call('HINCRBY', KEYS[3], 'bytes', 0 - freed)
  end
  redis.call('HSET', KEYS[1], 'size', ARGV[6], 'mtime', now)
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'atime', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'mtime', ARGV[8]) end
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'ctime', ARGV[9])
else
  redis.call('HSET', KEYS[1], 'ctime', now)
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return {0, redis.call('HGETALL', KEYS[1])}
