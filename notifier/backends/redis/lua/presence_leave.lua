-- A node no longer holds a member: 1 if no node does any more; else 0.
--
-- KEYS: the center's members, uids and info (presence_join.lua)
-- ARGV: uid, node
if redis.call('ZREM', KEYS[1], ARGV[1] .. '\n' .. ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 1
end
return 0
