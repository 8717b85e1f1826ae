-- PUBLISH messages held by publish.lua, once replicas have them, and forget
-- them. Answers how many were published.
--
-- KEYS: the held key ('' for none)
-- ARGV: channel, then each message as publish.lua made it
for i = 2, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end
if KEYS[1] ~= '' then redis.call('DEL', KEYS[1]) end
return #ARGV - 1
