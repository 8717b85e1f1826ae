-- Replace a publisher's record by one the caller made from it, if it is
-- still the one read, indexing the app id and key given (those of a
-- publisher stored before it had them): 1; 0 if the record changed
-- meanwhile (read it again); -1 if there is no such publisher; -2 (nothing
-- changed) if the app id or key is another publisher's.
--
-- The record is made by the caller, not here: cjson would write its
-- numbers back with fewer digits than they have.
--
-- KEYS: publishers hash, app ids hash (app id -> name), keys hash (key -> name)
-- ARGV: name, the record read, the new record, app id and key to index ('': none)
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return -1 end
if record ~= ARGV[2] then return 0 end
for i = 4, 5 do
  if ARGV[i] ~= '' then
    local owner = redis.call('HGET', KEYS[i - 2], ARGV[i])
    if owner and owner ~= ARGV[1] then return -2 end
  end
end
for i = 4, 5 do
  if ARGV[i] ~= '' then redis.call('HSET', KEYS[i - 2], ARGV[i], ARGV[1]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
