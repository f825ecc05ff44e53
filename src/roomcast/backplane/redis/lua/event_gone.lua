-- KEYS ev; ARGV seq -> 1 when this caller cleared the pending gone numbered seq (nobody
-- came back and nobody sent it) and so is the one to send it; with its transition ms
local pending = redis.call('HGET', KEYS[1], 'pending')
if pending ~= ARGV[1] then return {0, 0} end
redis.call('HDEL', KEYS[1], 'pending')
return {1, tonumber(redis.call('HGET', KEYS[1], 'down_ms') or '0')}
