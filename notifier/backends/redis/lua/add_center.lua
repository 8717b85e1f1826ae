-- Add a center unless it exists: {1, record} if added, {0, the existing
-- record}, or {-1, ''} when its publisher has the most centers already.
--
-- KEYS: the publisher's centers hash, its names' sorted set
-- ARGV: center, record, the most centers (0: no bound)
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {-1, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {1, ARGV[2]}
