-- KEYS nodes nodestats -> {node stats json of every live node...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
if #alive == 0 then return {} end
local out = {}
for _, s in ipairs(redis.call('HMGET', KEYS[2], unpack(alive))) do
  if s then out[#out + 1] = s end
end
return out
