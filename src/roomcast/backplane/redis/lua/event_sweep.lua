-- KEYS due; ARGV grace_ms -> {member, score, ...}: rooms and users ("<kind>\0<name>")
-- whose gone may be overdue by grace_ms (their node stopped or died); the caller claims
-- each in its own key (event_claim) and then drops or re-dates it here (due_drop)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'WITHSCORES',
                  'LIMIT', 0, 100)
