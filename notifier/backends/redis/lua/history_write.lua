-- A node's new samples of the metrics history: each list keeps its latest
-- entries and lives a while after the last write; the node is seen.
--
-- KEYS: the node's list of samples of every second, its list of samples of
--       every minute, the sorted set of nodes by their latest sample
-- ARGV: node, the time of its latest sample, entries kept and seconds to
--       live of the list of seconds, then of the list of minutes, how many
--       of the samples are of seconds, then the samples (JSON), seconds first
local latest = tonumber(ARGV[2])
local seconds = tonumber(ARGV[7])
local lists = {
  {KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]), 8, 7 + seconds},
  {KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), 8 + seconds, #ARGV},
}
for _, list in ipairs(lists) do
  local key, kept, ttl, first, last = unpack(list)
  if first <= last then
    -- a day of minutes, an hour of seconds: in chunks, within Lua's stack
    for i = math.max(first, last - kept + 1), last, 1000 do
      redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + 999, last)))
    end
    redis.call('LTRIM', key, -kept, -1)
    redis.call('EXPIRE', key, ttl)
  end
end
redis.call('ZADD', KEYS[3], latest, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (latest - tonumber(ARGV[6])))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
return 1
