-- KEYS nodes nodestats idx due; ARGV node prefix only_if_dead keep_ms delay_ms
-- -> {done, events...}
-- Removes up to 100 of a node's presence entries ("<room>\0<user>", or "\0<user>" for its
-- connections of a user), publishing `left` where a user's cluster-wide count in a room
-- reaches 0; run until done is 1. With delay_ms (room events on), events: kind, name,
-- seq of each room or user that became empty (protocol §13), numbered and held in `due`
-- as any other such transition.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) > now then return {1} end
end
local keep, delay = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {0}
local members = redis.call('SPOP', KEYS[3], 100)
for _, m in ipairs(members) do
  local sep = string.find(m, '\0', 1, true)
  local room = string.sub(m, 1, sep - 1)
  local user = string.sub(m, sep + 1)
  if sep == 1 then
    local c = ARGV[2] .. '{u:' .. user .. '}:uc'
    if redis.call('HDEL', c, ARGV[1]) == 1 and redis.call('EXISTS', c) == 0 and delay then
      local ev = ev_down(ARGV[2] .. '{u:' .. user .. '}:uev', KEYS[4], 'user', user, delay, keep)
      out[#out + 1] = 'user'; out[#out + 1] = user; out[#out + 1] = ev[2]
    end
  else
    local p = ARGV[2] .. '{' .. room .. '}:p'
    local pu = ARGV[2] .. '{' .. room .. '}:pu'
    local field = ARGV[1] .. '\0' .. user
    local v = redis.call('HGET', p, field)
    if v then
      local c = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
      local occupied = redis.call('EXISTS', pu)
      redis.call('HDEL', p, field)
      local total = redis.call('HINCRBY', pu, user, -c)
      if total <= 0 then
        redis.call('HDEL', pu, user)
        if c > 0 then redis.call('PUBLISH', ARGV[2] .. 'c:' .. room, 'p0\n\n' .. user) end
      end
      if delay and occupied == 1 and redis.call('EXISTS', pu) == 0 then
        local ev = ev_down(ARGV[2] .. '{' .. room .. '}:ev', KEYS[4], 'room', room, delay, keep)
        out[#out + 1] = 'room'; out[#out + 1] = room; out[#out + 1] = ev[2]
      end
    end
  end
end
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  out[1] = 1
end
return out
