-- KEYS due; ARGV grace_ms delay_ms -> {member, ms of the transition, ...}: gone events
-- overdue by grace_ms (their node stopped or died), taken out by this caller to send
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                       'WITHSCORES', 'LIMIT', 0, 100)
local out = {}
for i = 1, #due, 2 do
  if redis.call('ZREM', KEYS[1], due[i]) == 1 then
    out[#out + 1] = due[i]
    out[#out + 1] = tostring(tonumber(due[i + 1]) - tonumber(ARGV[2]))
  end
end
return out
