-- A node has no subscriber of a center left: 1 if no live node has any
-- (the center is vacated); else 0.
--
-- KEYS: the center's occupants, its occupied flag
-- ARGV: node, now
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('DEL', KEYS[2]) == 1 then return 1 end
return 0
