-- KEYS p; ARGV node... (the live ones) -> {user, connections, info, ...} over those nodes
local alive = {}
for _, n in ipairs(ARGV) do alive[n] = true end
local users = {}
local order = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local sep = string.find(f, '\0', 1, true)
  if alive[string.sub(f, 1, sep - 1)] then
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
