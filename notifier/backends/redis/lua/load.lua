-- Where a center's stream stands: {1, its record, its last seq, what it
-- retains}, or {0} when there is no such center.
--
-- KEYS: the publisher's centers hash, the center's seq and log keys
-- ARGV: center
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return {0} end
return {1, record, redis.call('GET', KEYS[2]) or '0', redis.call('LRANGE', KEYS[3], 0, -1)}
