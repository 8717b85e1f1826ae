-- A node has subscribers of a center (or says so again): 1 if the center
-- was not occupied; else 0.
--
-- KEYS: the center's occupants (sorted set of nodes by expiry), its
--       occupied flag, the index of centers with presence
-- ARGV: node, expiry, path
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
if redis.call('SET', KEYS[2], '1', 'NX') then return 1 end
return 0
