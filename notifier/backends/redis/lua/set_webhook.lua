-- Set a publisher's webhook: 1, or 0 (nothing set) if there is no such publisher.
--
-- KEYS: publishers hash, webhooks hash
-- ARGV: publisher, record
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
