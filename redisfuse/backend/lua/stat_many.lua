-- Reads the attributes of many inodes in one reply, so that a listing with
-- attributes (readdirplus, ls -l) costs one command per STAT_BATCH entries
-- instead of one per entry: Redis answers a thousand HMGETs inside a script
-- faster than the client can send and parse a thousand separate commands.
-- Each inode's values come back as one string, joined by spaces, in ARGV's
-- order: one reply element per inode instead of two per field, which is most
-- of what the client spends parsing a large listing.
-- KEYS[1..n] i:INO of each inode
-- ARGV[1..m] the attribute fields to return (model.ATTR_FIELDS)
-- Returns {"v1 v2 ... vm" per key ('' for a missing field); '' for an inode that is gone}.
local out = {}
for i, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  if values[1] then
    for j = 1, #values do
      if not values[j] then values[j] = '' end
    end
    out[i] = table.concat(values, ' ')
  else
    out[i] = ''
  end
end
return out
