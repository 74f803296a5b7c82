-- Reads the attributes of many inodes in one reply, so that a listing with
-- attributes (readdirplus, ls -l) costs one command per STAT_BATCH entries
-- instead of one per entry: Redis answers a thousand HGETALLs inside a script
-- faster than the client can send and parse a thousand separate commands.
-- KEYS[1..n] i:INO of each inode
-- Returns {{attribute field, value, ...} per key; {} for an inode that is gone}.
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
