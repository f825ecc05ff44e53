-- KEYS ev; ARGV seq -> 1 when this caller cleared the pending gone numbered seq (nobody
-- came back and nobody sent it) and so is the one to send it
if redis.call('HGET', KEYS[1], 'pending') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'pending')
return 1
