-- The latest samples of some nodes' metrics history: for each list of
-- KEYS, its latest ARGV[1] entries (JSON), oldest first.
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('LRANGE', key, -tonumber(ARGV[1]), -1)
end
return found
