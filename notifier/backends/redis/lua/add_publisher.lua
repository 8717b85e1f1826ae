-- Add a publisher unless its name, app id or key is another's: 1, or 0
-- (nothing added).
--
-- KEYS: publishers hash, app ids hash (app id -> name), keys hash (key -> name)
-- ARGV: name, record, app id, key
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1
    or redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
return 1
