-- KEYS o1 e1 o2 e2 ... -> {offset or -1, epoch or '', ...} (read only: nothing is created)
local out = {}
for i = 1, #KEYS, 2 do
  local o = redis.call('GET', KEYS[i])
  local e = redis.call('GET', KEYS[i + 1])
  if o and e then out[#out + 1] = tonumber(o); out[#out + 1] = e
  else out[#out + 1] = -1; out[#out + 1] = '' end
end
return out
