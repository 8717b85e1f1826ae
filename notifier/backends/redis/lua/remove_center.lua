-- Remove a center and its stream: 1, or 0 if there is no such center.
--
-- KEYS: the publisher's centers hash, the center's seq and log keys, deadlines,
--       the publisher's names' sorted set
-- ARGV: center, path
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
