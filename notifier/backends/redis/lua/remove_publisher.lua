-- Remove a publisher, its centers and their streams: 1, or 0 if unknown.
--
-- Its app id and key no longer name it.
--
-- KEYS: publishers hash, the publisher's centers hash, deadlines, webhooks
--       hash, app ids hash (app id -> name), keys hash (key -> name), the
--       sorted set of its centers' names
-- ARGV: name, then what each of its centers' seq key, log key and path
--       start with (a center's name completes them), then the pattern of
--       its Idempotency-Keys (a publisher made again under the name must
--       not be answered with its former self's ids)
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local publisher = cjson.decode(record)
for i, field in ipairs({'app_id', 'key'}) do
  local value = publisher[field]
  if type(value) == 'string' and redis.call('HGET', KEYS[4 + i], value) == ARGV[1] then
    redis.call('HDEL', KEYS[4 + i], value)
  end
end
for _, center in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. center, ARGV[3] .. center)
  redis.call('ZREM', KEYS[3], ARGV[4] .. center)
end
redis.call('DEL', KEYS[2], KEYS[7])
redis.call('HDEL', KEYS[4], ARGV[1])
local cursor = '0'
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', ARGV[5], 'COUNT', 1000)
  cursor = found[1]
  if #found[2] > 0 then redis.call('DEL', unpack(found[2])) end
until cursor == '0'
return 1
