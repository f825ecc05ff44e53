-- KEYS p pu ev; ARGV node user count info channel ttl delay_ms keep_ms
-- -> the user's cluster total; with delay_ms (room events on, protocol §13)
-- {total, dir, seq, gone, gone_ms} as ev_up/ev_down (dir 0: the room neither
-- filled nor emptied). The node's index of its entries is kept by the caller (another slot).
local room_before = redis.call('HLEN', KEYS[2])
local field = ARGV[1] .. '\0' .. ARGV[2]
local old = 0
local v = redis.call('HGET', KEYS[1], field)
if v then old = tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1)) end
local n = tonumber(ARGV[3])
local ttl = tonumber(ARGV[6])
if n > 0 then
  redis.call('HSET', KEYS[1], field, ARGV[3] .. '|' .. ARGV[4])
else
  redis.call('HDEL', KEYS[1], field)
end
local delta = n - old
local total = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if delta ~= 0 then
  total = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
  if total <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local before = total - delta
if before <= 0 and total > 0 then
  redis.call('SPUBLISH', ARGV[5], 'p1\n' .. ARGV[4] .. '\n' .. ARGV[2])
elseif before > 0 and total <= 0 then
  redis.call('SPUBLISH', ARGV[5], 'p0\n\n' .. ARGV[2])
end
if not ARGV[7] or ARGV[7] == '' then return total end
local room_after = redis.call('HLEN', KEYS[2])
local ev = {0, 0, 0, 0}
local delay, keep = tonumber(ARGV[7]), tonumber(ARGV[8])
if room_before == 0 and room_after > 0 then
  ev = ev_up(KEYS[3], delay, keep)
elseif room_before > 0 and room_after == 0 then
  ev = ev_down(KEYS[3], delay, keep)
end
return {total, ev[1], ev[2], ev[3], ev[4]}
