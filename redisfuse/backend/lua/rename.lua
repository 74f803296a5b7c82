-- Renames an entry, optionally replacing or exchanging the target.
-- KEYS[1] d:SP  KEYS[2] i:SP  KEYS[3] d:DP  KEYS[4] i:DP  KEYS[5] i:SRC
-- KEYS[6] i:DST  KEYS[7] d:DST  KEYS[8] x:DST  KEYS[9] s:DST  KEYS[10] m:DST
-- KEYS[11] usage  KEYS[12] reclaim  KEYS[13] orphans
-- KEYS[14..] i: keys of the ancestors of DP (chain 1) and then of SP (chain 2),
--            each chain ordered upward and ending at the root
-- ARGV[1] source name  ARGV[2] target name  ARGV[3] expected source ino
-- ARGV[4] expected target ino ('0': no target)  ARGV[5] flags (1 NOREPLACE,
-- 2 EXCHANGE)  ARGV[6] now (ns)  ARGV[7] now (ms)  ARGV[8] SP ino  ARGV[9] DP ino
-- ARGV[10] n1 = length of chain 1, then its inos, then n2, then chain 2's inos
-- Returns {0, fate of the replaced inode (see unlink.lua), {SP attributes}, {DP
-- attributes}, {SRC attributes}[, {DST attributes} (exchange)]}, {errno}, or {-1}
-- when an expected ino or an ancestor link no longer holds.
local err = check_dir(KEYS[2]) or check_dir(KEYS[4])
if err then return {err} end
local src = entry_ino(redis.call('HGET', KEYS[1], ARGV[1]))
if not src then return {ENOENT} end
if src ~= ARGV[3] then return {STALE} end
local dst = entry_ino(redis.call('HGET', KEYS[3], ARGV[2])) or '0'
if dst ~= ARGV[4] then return {STALE} end
local flags = tonumber(ARGV[5])
local exchange = bit.band(flags, 2) ~= 0
-- NOREPLACE refuses any existing target, even another name of the source (Linux).
if dst ~= '0' and bit.band(flags, 1) ~= 0 then return {EEXIST} end
if dst == src then return {0, 0} end  -- two names of one inode: POSIX says do nothing
local smode = redis.call('HGET', KEYS[5], 'mode')
if not smode then return {EIO} end
local sdir = is_dir_mode(smode)
local ddir = false
if dst ~= '0' then
  local dmode = redis.call('HGET', KEYS[6], 'mode')
  if not dmode then return {EIO} end
  ddir = is_dir_mode(dmode)
elseif exchange then
  return {ENOENT}
end

-- Moving directory MOVED under NEWPARENT must not put it inside itself. The
-- caller resolved NEWPARENT's ancestors; verify each link, then look for MOVED.
local n1 = tonumber(ARGV[10])
local function check_chain(moved, newparent, newparent_key, key_first, argv_first, n)
  if moved == newparent then return EINVAL end
  local key = newparent_key
  for k = 0, n - 1 do
    local expect = ARGV[argv_first + k]
    if redis.call('HGET', key, 'parent') ~= expect then return STALE end
    if expect == moved then return EINVAL end
    key = KEYS[key_first + k]
  end
  return nil
end
local sp, dp = ARGV[8], ARGV[9]
if sp ~= dp then
  if sdir then
    err = check_chain(src, dp, KEYS[4], 14, 11, n1)
    if err then return {err} end
  end
  if exchange and ddir then
    err = check_chain(dst, sp, KEYS[2], 14 + n1, 12 + n1, tonumber(ARGV[11 + n1]))
    if err then return {err} end
  end
end
-- Only now the kinds of source and target: Linux gives EINVAL for a move into
-- the source's own subtree before it looks at what the target is.
if dst ~= '0' and not exchange then
  if sdir and not ddir then return {ENOTDIR} end
  if ddir and not sdir then return {EISDIR} end
  if ddir and redis.call('HLEN', KEYS[7]) > 0 then return {ENOTEMPTY} end
end

local now = ARGV[6]
local fate = 0
if exchange then
  local sseq = redis.call('HINCRBY', KEYS[2], 'dseq', 1)
  redis.call('HSET', KEYS[1], ARGV[1], dst .. ':' .. sseq)
  local dseq = redis.call('HINCRBY', KEYS[4], 'dseq', 1)
  redis.call('HSET', KEYS[3], ARGV[2], src .. ':' .. dseq)
  if sp ~= dp then
    if sdir then
      redis.call('HINCRBY', KEYS[2], 'nlink', -1)
      redis.call('HINCRBY', KEYS[4], 'nlink', 1)
      redis.call('HSET', KEYS[5], 'parent', dp)
    end
    if ddir then
      redis.call('HINCRBY', KEYS[4], 'nlink', -1)
      redis.call('HINCRBY', KEYS[2], 'nlink', 1)
      redis.call('HSET', KEYS[6], 'parent', sp)
    end
  end
  touch(KEYS[6], now, false)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  local seq = redis.call('HINCRBY', KEYS[4], 'dseq', 1)
  redis.call('HSET', KEYS[3], ARGV[2], src .. ':' .. seq)
  if sdir and sp ~= dp then
    redis.call('HINCRBY', KEYS[2], 'nlink', -1)
    redis.call('HINCRBY', KEYS[4], 'nlink', 1)
    redis.call('HSET', KEYS[5], 'parent', dp)
  end
  if dst ~= '0' then
    local left = 0
    if ddir then
      redis.call('HINCRBY', KEYS[4], 'nlink', -1)
    else
      left = redis.call('HINCRBY', KEYS[6], 'nlink', -1)
    end
    if left > 0 then
      touch(KEYS[6], now, false)
    else
      redis.call('HSET', KEYS[6], 'ctime', now)
      fate = drop_inode(dst, KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11],
                        KEYS[12], KEYS[13], ARGV[7])
    end
  end
end
touch(KEYS[5], now, false)
touch(KEYS[2], now, true)
if sp ~= dp then touch(KEYS[4], now, true) end
local result = {0, fate, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[4]),
                redis.call('HGETALL', KEYS[5])}
if exchange then result[6] = redis.call('HGETALL', KEYS[6]) end
return result
