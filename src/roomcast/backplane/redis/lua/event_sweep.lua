-- KEYS due; ARGV grace_ms -> {member, ...}: gone events overdue by grace_ms (their node
-- stopped or died); the caller claims each in its own key (event_gone), then drops it here
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 100)
