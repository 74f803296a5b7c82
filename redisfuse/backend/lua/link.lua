-- Adds a hard link: a new name for an existing non-directory inode.
-- KEYS[1] d:PARENT  KEYS[2] i:PARENT  KEYS[3] i:TARGET
-- ARGV[1] name  ARGV[2] target ino  ARGV[3] now (ns)
-- Returns {0, seq, {target attribute field, value, ...}} or {errno}.
local err = check_dir(KEYS[2])
if err then return {err} end
-- Linux looks the new name up before vfs_link checks the target: EEXIST first.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {EEXIST} end
local t = redis.call('HMGET', KEYS[3], 'mode', 'nlink')
if not t[1] or tonumber(t[2]) == 0 then return {ENOENT} end
if is_dir_mode(t[1]) then return {EPERM} end
local seq = redis.call('HINCRBY', KEYS[2], 'dseq', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. seq)
touch(KEYS[2], ARGV[3], true)
redis.call('HINCRBY', KEYS[3], 'nlink', 1)
touch(KEYS[3], ARGV[3], false)
return {0, seq, redis.call('HGETALL', KEYS[3])}
