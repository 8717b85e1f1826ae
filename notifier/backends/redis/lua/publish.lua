-- Publish messages, all or none: check every center, number each message
-- (INCR), retain it (RPUSH + LTRIM), move its center's expiry deadline,
-- PUBLISH it, and remember the ids under the Idempotency-Key if there is one.
-- Answers {1, ids as JSON}; {0, ids as JSON} for a key seen before;
-- {-1, center} when a center is missing.
--
-- KEYS: deadlines, the idempotency key ('' for none), then for each message
--       its publisher's centers hash, its center's seq and log keys
-- ARGV: channel, ts, n, how long a key is remembered, then for each message
--       publisher, center, path, data, history, ttl
local deadlines, idem = KEYS[1], KEYS[2]
local channel, ts, n, idem_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if idem ~= '' then
  local prior = redis.call('GET', idem)
  if prior then return {0, prior} end
end
local epochs = {}
for i = 0, n - 1 do
  local center = ARGV[6 + i * 6]
  local record = redis.call('HGET', KEYS[3 + i * 3], center)
  if not record then return {-1, center} end
  epochs[i] = cjson.decode(record)['epoch']
end
local ids = {}
for i = 0, n - 1 do
  local k, a = 3 + i * 3, 5 + i * 6
  local publisher, center, path, data = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local history, ttl = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local seq = redis.call('INCR', KEYS[k + 1])
  if history > 0 then
    redis.call('RPUSH', KEYS[k + 2], cjson.encode({seq, ts, data}))
    redis.call('LTRIM', KEYS[k + 2], -history, -1)
  end
  if ttl > 0 then redis.call('ZADD', deadlines, tonumber(ts) + ttl, path) end
  redis.call('PUBLISH', channel, cjson.encode({publisher, center, epochs[i], seq, ts, data}))
  ids[#ids + 1] = epochs[i] .. '-' .. seq
end
local encoded = cjson.encode(ids)
if idem ~= '' then redis.call('SET', idem, encoded, 'EX', idem_ttl) end
return {1, encoded}
