-- KEYS nodes nodestats idx; ARGV node prefix only_if_dead -> 1 when the node is gone
-- Removes up to 100 of a node's presence entries, publishing `left` where a user's
-- cluster-wide count reaches 0; run until it returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) > now then return 1 end
end
local members = redis.call('SPOP', KEYS[3], 100)
for _, m in ipairs(members) do
  local sep = string.find(m, '\0', 1, true)
  local room = string.sub(m, 1, sep - 1)
  local user = string.sub(m, sep + 1)
  local p = ARGV[2] .. '{' .. room .. '}:p'
  local pu = ARGV[2] .. '{' .. room .. '}:pu'
  local field = ARGV[1] .. '\0' .. user
  local v = redis.call('HGET', p, field)
  if v then
    local c = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
    redis.call('HDEL', p, field)
    local total = redis.call('HINCRBY', pu, user, -c)
    if total <= 0 then
      redis.call('HDEL', pu, user)
      if c > 0 then redis.call('PUBLISH', ARGV[2] .. 'c:' .. room, 'p0\n\n' .. user) end
    end
  end
end
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
