-- KEYS ev; ARGV delay_ms grace_ms -> {1, seq, down_ms} when this caller cleared a pending
-- gone overdue by grace_ms (it is the one to send it); {2, due_ms} when one is pending but
-- not overdue yet; {0} when none is pending
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending then return {0} end
local down_ms = tonumber(redis.call('HGET', KEYS[1], 'down_ms') or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = down_ms + tonumber(ARGV[1])
if now < due + tonumber(ARGV[2]) then return {2, due} end
redis.call('HDEL', KEYS[1], 'pending')
return {1, tonumber(pending), down_ms}
