-- KEYS p nodes -> {user, connections, info, ...} over the nodes whose heartbeat is alive
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = {}
local users = {}
local order = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local sep = string.find(f, '\0', 1, true)
  local node = string.sub(f, 1, sep - 1)
  local ok = alive[node]
  if ok == nil then
    local s = redis.call('ZSCORE', KEYS[2], node)
    ok = (s ~= false and s ~= nil and tonumber(s) > now)
    alive[node] = ok
  end
  if ok then
    local user = string.sub(f, sep + 1)
    local v = all[i + 1]
    local bar = string.find(v, '|', 1, true)
    local c = tonumber(string.sub(v, 1, bar - 1))
    local u = users[user]
    if u then u[1] = u[1] + c
    else users[user] = {c, string.sub(v, bar + 1)}; order[#order + 1] = user end
  end
end
local out = {}
for _, user in ipairs(order) do
  out[#out + 1] = user; out[#out + 1] = users[user][1]; out[#out + 1] = users[user][2]
end
return out
