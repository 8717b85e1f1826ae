-- A page of a publisher's centers by name: {total, name, record, name,
-- record, ...}, total being how many names are in [low, high).
--
-- The names are also in a sorted set (all of score 0, so by name), which
-- add_center.lua and remove_center.lua keep; a store written by a daemon
-- from before it was kept has the set made here, once, from the hash.
--
-- KEYS: the publisher's centers hash, its names' sorted set
-- ARGV: the lowest name, as ZRANGEBYLEX takes it ("[name" or "(name"),
--       the first name past the range ("(name"), the lowest name of the
--       prefix's range ("[prefix"), the most names (0: only the total)
if redis.call('ZCARD', KEYS[2]) ~= redis.call('HLEN', KEYS[1]) then
  redis.call('DEL', KEYS[2])
  local names = redis.call('HKEYS', KEYS[1])
  for i = 1, #names, 1000 do
    local batch = {}
    for j = i, math.min(i + 999, #names) do
      batch[#batch + 1] = 0
      batch[#batch + 1] = names[j]
    end
    redis.call('ZADD', KEYS[2], unpack(batch))
  end
end
local answer = {redis.call('ZLEXCOUNT', KEYS[2], ARGV[3], ARGV[2])}
local limit = tonumber(ARGV[4])
if limit > 0 then
  for _, name in ipairs(redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2], 'LIMIT', 0, limit)) do
    local record = redis.call('HGET', KEYS[1], name)
    if record then
      answer[#answer + 1] = name
      answer[#answer + 1] = record
    end
  end
end
return answer
