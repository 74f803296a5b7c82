#!lua flags=allow-oom
-- Hands out a new session id. Runs on a full Redis too (allow-oom), with
-- register.lua, so that a volume can still be mounted there to delete files,
-- and `redisfuse gc` can run to free space.
-- KEYS[1] counter:sess
-- Returns {0, session id}.
return {0, redis.call('INCR', KEYS[1])}
