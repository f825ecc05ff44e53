-- KEYS c ev idx due; ARGV node count member delay_ms keep_ms idx_ttl user
-- -> {dir, seq, gone, gone_ms} as ev_up/ev_down (dir 0: no transition)
-- c: node -> the user's live connections there (protocol §13)
local before = redis.call('HLEN', KEYS[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[3])
end
local after = redis.call('HLEN', KEYS[1])
local delay, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
if before == 0 and after > 0 then return ev_up(KEYS[2], KEYS[4], 'user', ARGV[7], delay, keep) end
if before > 0 and after == 0 then return ev_down(KEYS[2], KEYS[4], 'user', ARGV[7], delay, keep) end
return {0, 0, 0, 0}
