-- Forget what nodes that stopped saying so held: {left, vacated}, left
-- being path, uid, path, uid... of the members no live node holds any
-- more, vacated the paths no live node has subscribers of any more.
--
-- KEYS: the index of centers with presence
-- ARGV: now, the prefix of the members, uids, info, occupants and
--       occupied keys (a path completes each)
local prefix = ARGV[2]
local left, vacated = {}, {}
for _, path in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local members, uids, info = prefix .. 'members:' .. path, prefix .. 'uids:' .. path, prefix .. 'info:' .. path
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', members, '-inf', ARGV[1])) do
    redis.call('ZREM', members, entry)
    local uid = string.match(entry, '^(.*)\n[^\n]*$')
    if redis.call('HINCRBY', uids, uid, -1) <= 0 then
      redis.call('HDEL', uids, uid)
      redis.call('HDEL', info, uid)
      table.insert(left, path)
      table.insert(left, uid)
    end
  end
  local occupants, occupied = prefix .. 'occupants:' .. path, prefix .. 'occupied:' .. path
  redis.call('ZREMRANGEBYSCORE', occupants, '-inf', ARGV[1])
  if redis.call('ZCARD', occupants) == 0 then
    if redis.call('DEL', occupied) == 1 then table.insert(vacated, path) end
    if redis.call('ZCARD', members) == 0 then redis.call('SREM', KEYS[1], path) end
  end
end
return {left, vacated}
