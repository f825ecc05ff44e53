-- KEYS p pu ev; ARGV node user channel delay_ms keep_ms -> {dir, seq, gone, gone_ms}
-- A dead node's presence of a user in a room: removed, `left` published when the user's
-- count everywhere reaches 0, and with delay_ms (room events on) the room's "gone" when it
-- emptied. Removing an entry already removed does nothing, so reapers may race.
local field = ARGV[1] .. '\0' .. ARGV[2]
local v = redis.call('HGET', KEYS[1], field)
if not v then return {0, 0, 0, 0} end
local c = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1))
local occupied = redis.call('EXISTS', KEYS[2])
redis.call('HDEL', KEYS[1], field)
local total = redis.call('HINCRBY', KEYS[2], ARGV[2], -c)
if total <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  if c > 0 then redis.call('SPUBLISH', ARGV[3], 'p0\n\n' .. ARGV[2]) end
end
if ARGV[4] ~= '' and occupied == 1 and redis.call('EXISTS', KEYS[2]) == 0 then
  return ev_down(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
end
return {0, 0, 0, 0}
