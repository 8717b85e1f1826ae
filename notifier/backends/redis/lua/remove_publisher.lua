-- Remove a publisher, its centers and their streams: 1, or 0 if unknown.
--
-- KEYS: publishers hash, the publisher's centers hash, deadlines, webhooks hash
-- ARGV: name, then what each of its centers' seq key, log key and path
--       start with (a center's name completes them)
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, center in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. center, ARGV[3] .. center)
  redis.call('ZREM', KEYS[3], ARGV[4] .. center)
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
