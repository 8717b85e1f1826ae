-- The name and record of the publisher an index (app id or key) names,
-- in one round trip: {name, record}, or nil.
--
-- KEYS: the index hash (app ids or keys), publishers hash
-- ARGV: the app id or key
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return nil end
local record = redis.call('HGET', KEYS[2], name)
if not record then return nil end
return {name, record}
