-- Formats an empty volume: settings, the root directory, counters.
-- KEYS[1] setting  KEYS[2] i:1 (root)  KEYS[3] usage  KEYS[4] counter:ino
-- ARGV[1] format version  ARGV[2] block size  ARGV[3] codec  ARGV[4] now (ns)
-- ARGV[5] uuid  ARGV[6] root mode  ARGV[7] uid  ARGV[8] gid
-- ARGV[9] object layout (tagged or spread; see keys.py)
-- Returns {0, 1} when formatted now, {0, 0} when the volume was already formatted.
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0} end
redis.call('HSET', KEYS[1], 'format', ARGV[1], 'block_size', ARGV[2], 'codec', ARGV[3],
           'created', ARGV[4], 'uuid', ARGV[5], 'objects', ARGV[9])
redis.call('HSET', KEYS[2], 'mode', ARGV[6], 'uid', ARGV[7], 'gid', ARGV[8], 'nlink', 2,
           'size', 0, 'rdev', 0, 'atime', ARGV[4], 'mtime', ARGV[4], 'ctime', ARGV[4],
           'version', 1, 'bytes', 0, 'opens', 0, 'parent', 1, 'dseq', 0, 'xattrs', 0)
redis.call('HSET', KEYS[3], 'inodes', 1, 'bytes', 0)
redis.call('SETNX', KEYS[4], 1)
return {0, 1}
