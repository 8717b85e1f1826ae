-- Replace a publisher's secret: 1, or 0 if unknown.
--
-- KEYS: publishers hash
-- ARGV: name, secret
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local publisher = cjson.decode(record)
publisher['secret'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(publisher))
return 1
