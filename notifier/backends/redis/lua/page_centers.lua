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
-- A name left without its record (removed by a daemon from before the
-- set was kept) is taken out of the set here, and the page read on past
-- it; the set and the hash then differ in size, and the next page makes
-- the set again from the hash.
local rows = {}
local want = tonumber(ARGV[4])
local low = ARGV[1]
while want > 0 do
  local names = redis.call('ZRANGEBYLEX', KEYS[2], low, ARGV[2], 'LIMIT', 0, want)
  for _, name in ipairs(names) do
    local record = redis.call('HGET', KEYS[1], name)
    if record then
      rows[#rows + 1] = name
      rows[#rows + 1] = record
    else
      redis.call('ZREM', KEYS[2], name)
    end
  end
  if #names < want then break end
  want = tonumber(ARGV[4]) - #rows / 2
  low = '(' .. names[#names]
end
local answer = {redis.call('ZLEXCOUNT', KEYS[2], ARGV[3], ARGV[2])}
for _, value in ipairs(rows) do
  answer[#answer + 1] = value
end
return answer
