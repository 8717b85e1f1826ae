-- Publish messages, all or none: check every center, number each message
-- (INCR), retain it (RPUSH + LTRIM), move its center's expiry deadline,
-- PUBLISH it, and remember the ids under the Idempotency-Key if there is one,
-- after the publish's fingerprint and a space.
--
-- A retained message is [seq, ts, data], and [seq, ts, data, event] for
-- one of an event other than 'message'; a published one [publisher,
-- center, epoch, seq, ts, data], then its event when it is not 'message'
-- or it skips a connection, then that connection (a Pusher socket id), if
-- any: a message of the default event is what it was before events were.
-- Answers {1, ids as JSON}; {0, what the key holds} for a key seen before;
-- {-1, center} when a center is missing.
--
-- Held (when replicas must have a publish before it is acknowledged), the
-- messages are not PUBLISHed: they are answered, {1, ids, messages as
-- JSON}, for the caller to PUBLISH (release.lua) once the replicas have
-- them, and kept under the held key (with an Idempotency-Key) until then,
-- so that a retry answered {0, ids, those messages or ''} publishes them if
-- the first attempt could not (once the replicas have them: it writes too).
--
-- KEYS: deadlines, the idempotency key ('' for none), the held key ('' for
--       none), then for each message its publisher's centers hash, its
--       center's seq and log keys
-- ARGV: channel, ts, n, how long a key is remembered, held ('1' or '0'),
--       the publish's fingerprint, the arguments per message (6, or 8 when
--       one has an event or skips a connection), then for each message
--       publisher, center, path, data, history, ttl, and with 8 its event
--       and the connection it skips ('' for none)
local deadlines, idem, held_key = KEYS[1], KEYS[2], KEYS[3]
local channel, ts, n, idem_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local held = ARGV[5] == '1'
local fingerprint = ARGV[6]
local stride = tonumber(ARGV[7])
if idem ~= '' then
  local prior = redis.call('GET', idem)
  if prior then
    if held then
      -- A write, so that the caller's WAIT covers the first attempt's too
      -- (WAIT waits for what its connection last wrote).
      redis.call('EXPIRE', idem, idem_ttl)
      local waiting = held_key ~= '' and redis.call('GET', held_key) or false
      return {0, prior, waiting or ''}
    end
    return {0, prior}
  end
end
local epochs = {}
for i = 0, n - 1 do
  local center = ARGV[9 + i * stride]
  local record = redis.call('HGET', KEYS[4 + i * 3], center)
  if not record then return {-1, center} end
  epochs[i] = cjson.decode(record)['epoch']
end
local ids, messages = {}, {}
for i = 0, n - 1 do
  local k, a = 4 + i * 3, 8 + i * stride
  local publisher, center, path, data = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local history, ttl = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local event, exclude = 'message', ''
  if stride == 8 then event, exclude = ARGV[a + 6], ARGV[a + 7] end
  local seq = redis.call('INCR', KEYS[k + 1])
  if history > 0 then
    local entry = {seq, ts, data}
    if event ~= 'message' then entry[4] = event end
    redis.call('RPUSH', KEYS[k + 2], cjson.encode(entry))
    redis.call('LTRIM', KEYS[k + 2], -history, -1)
  end
  if ttl > 0 then redis.call('ZADD', deadlines, tonumber(ts) + ttl, path) end
  local published = {publisher, center, epochs[i], seq, ts, data}
  if exclude ~= '' then
    published[7], published[8] = event, exclude
  elseif event ~= 'message' then
    published[7] = event
  end
  local message = cjson.encode(published)
  if held then
    messages[#messages + 1] = message
  else
    redis.call('PUBLISH', channel, message)
  end
  ids[#ids + 1] = epochs[i] .. '-' .. seq
end
local encoded = cjson.encode(ids)
if idem ~= '' then redis.call('SET', idem, fingerprint .. ' ' .. encoded, 'EX', idem_ttl) end
if held then
  local waiting = cjson.encode(messages)
  if held_key ~= '' then redis.call('SET', held_key, waiting, 'EX', idem_ttl) end
  return {1, encoded, waiting}
end
return {1, encoded}
