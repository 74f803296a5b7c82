#!lua flags=allow-oom
-- Removes a name (unlink) or an empty directory (rmdir).
-- Runs on a full Redis too (allow-oom): removing files is how space is freed.
-- KEYS[1] d:PARENT  KEYS[2] i:PARENT  KEYS[3] i:CHILD  KEYS[4] d:CHILD
-- KEYS[5] x:CHILD  KEYS[6] s:CHILD  KEYS[7] m:CHILD  KEYS[8] usage
-- KEYS[9] reclaim  KEYS[10] orphans
-- ARGV[1] name  ARGV[2] expected child ino  ARGV[3] 1 for rmdir  ARGV[4] now (ns)
-- ARGV[5] now (ms)
-- Returns {0, fate, {parent attribute field, value, ...}} (fate 0: other links
-- remain, 1: orphaned while open, 2: freed), {errno}, or {-1, actual child ino}
-- when the name now names another inode.
local err = check_dir(KEYS[2])
if err then return {err} end
local child = entry_ino(redis.call('HGET', KEYS[1], ARGV[1]))
if not child then return {ENOENT} end
if child ~= ARGV[2] then return {STALE, child} end
local cmode = redis.call('HGET', KEYS[3], 'mode')
local isdir = cmode and is_dir_mode(cmode)
if ARGV[3] == '1' then
  if not isdir then return {ENOTDIR} end
  if redis.call('HLEN', KEYS[4]) > 0 then return {ENOTEMPTY} end
elseif isdir then
  return {EISDIR}
end
redis.call('HDEL', KEYS[1], ARGV[1])
touch(KEYS[2], ARGV[4], true)
if not cmode then  -- dangling entry: the name is gone, nothing else
  return {0, 0, redis.call('HGETALL', KEYS[2])}
end
local nlink = 0
if isdir then
  redis.call('HINCRBY', KEYS[2], 'nlink', -1)
else
  nlink = redis.call('HINCRBY', KEYS[3], 'nlink', -1)
end
if nlink > 0 then
  touch(KEYS[3], ARGV[4], false)
  return {0, 0, redis.call('HGETALL', KEYS[2])}
end
redis.call('HSET', KEYS[3], 'ctime', ARGV[4])
local fate = drop_inode(child, KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9],
                      KEYS[10], ARGV[5])
return {0, fate, redis.call('HGETALL', KEYS[2])}
