-- Creates a new inode under a name: regular file, directory, symlink, fifo,
-- socket or device; optionally opens it for the calling session.
-- KEYS[1] d:PARENT  KEYS[2] i:PARENT  KEYS[3] i:NEW  KEYS[4] s:NEW
-- KEYS[5] usage  KEYS[6] open:SID  KEYS[7] setting
-- ARGV[1] name  ARGV[2] new ino  ARGV[3] mode  ARGV[4] uid  ARGV[5] gid
-- ARGV[6] rdev  ARGV[7] now (ns)  ARGV[8] symlink target ('' for none)
-- ARGV[9] 1 to open it  ARGV[10] parent ino
-- Returns {0, seq, mode, gid, {parent attribute field, value, ...}} or {errno}
-- (ENOSPC: the volume's inode quota is reached); {-1} if the new ino is taken.
local err = check_dir(KEYS[2])
if err then return {err} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {EEXIST} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {STALE} end
if over_quota(KEYS[7], KEYS[5], 'inodes', 1) then return {ENOSPC} end
local mode = tonumber(ARGV[3])
local gid = ARGV[5]
local isdir = is_dir_mode(mode)
local p = redis.call('HMGET', KEYS[2], 'mode', 'gid')
if bit.band(tonumber(p[1]), 0x400) ~= 0 then   -- setgid directory: group inherits
  gid = p[2]
  if isdir then mode = bit.bor(mode, 0x400) end
end
local seq = redis.call('HINCRBY', KEYS[2], 'dseq', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. seq)
touch(KEYS[2], ARGV[7], true)
local nlink = 1
if isdir then
  nlink = 2
  redis.call('HINCRBY', KEYS[2], 'nlink', 1)
end
local size = 0
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[4], ARGV[8])
  size = string.len(ARGV[8])
end
local opens = 0
if ARGV[9] == '1' then
  opens = 1
  redis.call('HINCRBY', KEYS[6], ARGV[2], 1)
end
redis.call('HSET', KEYS[3], 'mode', mode, 'uid', ARGV[4], 'gid', gid, 'nlink', nlink,
           'size', size, 'rdev', ARGV[6], 'atime', ARGV[7], 'mtime', ARGV[7],
           'ctime', ARGV[7], 'version', 1, 'bytes', 0, 'opens', opens, 'xattrs', 0)
if isdir then redis.call('HSET', KEYS[3], 'parent', ARGV[10], 'dseq', 0) end
redis.call('HINCRBY', KEYS[5], 'inodes', 1)
return {0, seq, mode, gid, redis.call('HGETALL', KEYS[2])}
