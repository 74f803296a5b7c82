-- Shared helpers, prepended to every script by scripts.py (not a script itself).
-- Never negate with unary minus: Lua 5.1 turns -0 into "-0", which HINCRBY
-- rejects; write 0 - x.
-- Return convention of every script: {0, ...} on success, {errno} on a POSIX
-- error (nothing changed), {-1, ...} when the caller's view of the namespace
-- was stale (nothing changed; the caller re-resolves names and retries), {-2}
-- when the caller's session was declared dead (nothing changed; see once()).
local ENOENT, EEXIST, EPERM, EIO, ENOTDIR, EISDIR, EINVAL, ENOSPC, ENOTEMPTY, ENODATA =
      2, 17, 1, 5, 20, 21, 22, 28, 39, 61
local STALE = -1
local FENCED = -2
local S_IFMT, S_IFDIR = 0xF000, 0x4000

local function is_dir_mode(mode)
  return bit.band(tonumber(mode), S_IFMT) == S_IFDIR
end

-- entry value "CHILD:SEQ" -> CHILD (string)
local function entry_ino(value)
  if not value then return nil end
  return string.match(value, '^(%d+):')
end

-- Check that KEYS[ikey] is a live directory; return errno or nil.
local function check_dir(ikey)
  local v = redis.call('HMGET', ikey, 'mode', 'nlink')
  if not v[1] then return ENOENT end
  if not is_dir_mode(v[1]) then return ENOTDIR end
  if tonumber(v[2]) == 0 then return ENOENT end
  return nil
end

-- Mark an inode changed: ctime (and mtime when asked) and version.
local function touch(ikey, now, with_mtime)
  if with_mtime then
    redis.call('HSET', ikey, 'mtime', now, 'ctime', now)
  else
    redis.call('HSET', ikey, 'ctime', now)
  end
  redis.call('HINCRBY', ikey, 'version', 1)
end

-- An inode lost its last name. Keep it as an orphan while any session holds
-- it open; otherwise delete its metadata now and queue its block map for the
-- client to delete the objects (keys of objects are not known here).
-- Returns 1 when orphaned, 2 when freed.
local function drop_inode(ino, ikey, dkey, xkey, skey, mkey, usage, reclaim, orphans, nowms)
  local opens = tonumber(redis.call('HGET', ikey, 'opens') or '0')
  if opens > 0 then
    redis.call('HSET', ikey, 'nlink', 0)
    redis.call('HINCRBY', ikey, 'version', 1)
    redis.call('ZADD', orphans, nowms, ino)
    return 1
  end
  local used = tonumber(redis.call('HGET', ikey, 'bytes') or '0')
  redis.call('DEL', ikey, dkey, xkey, skey)
  redis.call('ZREM', orphans, ino)
  redis.call('HINCRBY', usage, 'inodes', -1)
  redis.call('HINCRBY', usage, 'bytes', 0 - used)
  if redis.call('EXISTS', mkey) == 1 then
    redis.call('ZADD', reclaim, nowms, ino)
  end
  return 2
end

-- Whether adding ``delta`` to the volume's usage field ``what`` ('bytes' or
-- 'inodes') would pass its quota (setting field quota_bytes / quota_inodes;
-- unset or 0: no quota).
local function over_quota(setting, usage, what, delta)
  local quota = tonumber(redis.call('HGET', setting, 'quota_' .. what) or '0')
  if quota <= 0 then return false end
  return tonumber(redis.call('HGET', usage, what) or '0') + delta > quota
end

-- Runs a mutating script at most once per request, for a caller whose session
-- is alive. scripts.py wraps the script's body in run() and appends to its
-- KEYS: sessions, rq:CALLER (hash: request id -> packed result); and to its
-- ARGV: the caller's session id, this request's id, and the ids (space
-- separated) of requests whose replies the caller has received, whose records
-- can go. A request replayed after a lost reply gets the recorded result of its
-- first run. Only successes are recorded: a refusal changed nothing, so running
-- it again is the same as running it once, later. Records are written after the
-- body, so that on a full Redis the body's own first write meets the OOM check.
local function once(run)
  local rq, sessions = table.remove(KEYS), table.remove(KEYS)
  local forget, rid, sid = table.remove(ARGV), table.remove(ARGV), table.remove(ARGV)
  if not redis.call('ZSCORE', sessions, sid) then return {FENCED} end
  local result
  local prev = redis.call('HGET', rq, rid)
  if prev then
    result = cmsgpack.unpack(prev)
  else
    result = run()
    if result[1] == 0 then
      redis.call('HSET', rq, rid, cmsgpack.pack(result))
      redis.call('HINCRBY', rq, 'acked', 1)  -- see ``rq:SID`` in keys.py
    end
  end
  if forget ~= '' then
    local ids = {}
    for id in string.gmatch(forget, '%S+') do ids[#ids + 1] = id end
    redis.call('HDEL', rq, unpack(ids))
  end
  return result
end
