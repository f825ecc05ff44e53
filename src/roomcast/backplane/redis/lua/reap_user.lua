-- KEYS c ev; ARGV node delay_ms keep_ms -> {dir, seq, gone, gone_ms}
-- A dead node's connections of a user: forgotten, and with delay_ms (room events on) the
-- user's "gone" when no node has any left.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0
    and ARGV[2] ~= '' then
  return ev_down(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
return {0, 0, 0, 0}
