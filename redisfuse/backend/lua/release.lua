#!lua flags=allow-oom
-- Drops open handles of a session; frees the inode when it was the last
-- holder of a file that has no names left.
-- Runs on a full Redis too (allow-oom): a close must always succeed, and it only frees.
-- KEYS[1] i:INO  KEYS[2] open:SID  KEYS[3] d:INO  KEYS[4] x:INO  KEYS[5] s:INO
-- KEYS[6] m:INO  KEYS[7] usage  KEYS[8] reclaim  KEYS[9] orphans
-- ARGV[1] ino  ARGV[2] number of handles released  ARGV[3] now (ms)
-- Returns {0, fate} (0: still in use or named, 2: freed).
-- Only handles the session still holds are released: two nodes reclaiming one
-- dead session at once release each of its holds once between them.
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local count = math.min(tonumber(ARGV[2]), held)
if count <= 0 then return {0, 0} end
if count == held then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], 0 - count)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local opens = redis.call('HINCRBY', KEYS[1], 'opens', 0 - count)
if opens < 0 then
  redis.call('HSET', KEYS[1], 'opens', 0)
  opens = 0
end
if opens == 0 and tonumber(redis.call('HGET', KEYS[1], 'nlink')) == 0 then
  return {0, drop_inode(ARGV[1], KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                        KEYS[8], KEYS[9], ARGV[3])}
end
return {0, 0}
