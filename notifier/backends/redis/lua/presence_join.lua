-- A node holds a member of a center (or says so again): 1 if the uid is
-- new to the center, on every node; else 0.
--
-- KEYS: the center's members (sorted set "uid\nnode" by expiry), its uids
--       (hash uid -> nodes holding it), its info (hash uid -> JSON), the
--       index of centers with presence (set of paths)
-- ARGV: uid, node, info JSON, expiry, path
local entry = ARGV[1] .. '\n' .. ARGV[2]
local added = redis.call('ZADD', KEYS[1], ARGV[4], entry)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[5])
if added == 1 and redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then return 1 end
return 0
