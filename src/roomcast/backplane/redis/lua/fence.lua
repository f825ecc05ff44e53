-- KEYS o e h k kt per room; ARGV new_epoch ttl, then seen_epoch seen_offset per room
-- -> {offset, epoch, ended, ...} per room (offset -1 and epoch '' when the stream is gone)
-- A room whose epoch is the one seen but whose counter is behind the offset seen lost
-- acknowledged writes (failover, old snapshot): its stream ends here (new epoch, offset 0,
-- empty history), so no offset of that epoch is ever assigned twice.
local out = {}
local ttl = tonumber(ARGV[2])
for i = 0, #KEYS / 5 - 1 do
  local k = 5 * i
  local epoch = redis.call('GET', KEYS[k + 2])
  local offset = redis.call('GET', KEYS[k + 1])
  local ended = 0
  if epoch and offset then
    offset = tonumber(offset)
    if epoch == ARGV[3 + 2 * i] and offset < tonumber(ARGV[4 + 2 * i]) then
      redis.call('DEL', KEYS[k + 3], KEYS[k + 4], KEYS[k + 5])
      epoch = ARGV[1]
      offset = 0
      redis.call('SET', KEYS[k + 2], epoch, 'PX', ttl)
      redis.call('SET', KEYS[k + 1], 0, 'PX', ttl)
      ended = 1
    end
    out[#out + 1] = offset; out[#out + 1] = epoch; out[#out + 1] = ended
  else
    out[#out + 1] = -1; out[#out + 1] = ''; out[#out + 1] = 0
  end
end
return out
