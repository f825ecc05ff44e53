-- KEYS c ev; ARGV node count delay_ms keep_ms
-- -> {dir, seq, gone, gone_ms} as ev_up/ev_down (dir 0: no transition)
-- c: node -> the user's live connections there (protocol §13); the node's index of its
-- entries is kept by the caller (another slot)
local before = redis.call('HLEN', KEYS[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local after = redis.call('HLEN', KEYS[1])
local delay, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
if before == 0 and after > 0 then return ev_up(KEYS[2], delay, keep) end
if before > 0 and after == 0 then return ev_down(KEYS[2], delay, keep) end
return {0, 0, 0, 0}
