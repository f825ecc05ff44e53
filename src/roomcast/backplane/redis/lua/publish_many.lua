-- Several messages to one room in one atomic step, so they take consecutive offsets
-- whichever other node publishes to the room meanwhile (an /api/batch's run of publishes).
-- KEYS o e h k kt; ARGV channel new_epoch size httl window max_keys ttl seen_epoch
-- seen_offset, then four per message: head tail event idem (idem as in publish.lua)
-- Returns {epoch, offset1, duplicate1, offset2, duplicate2, ...}.
-- (lib.lua is put in front of this script when it is loaded)
local now = now_ms()
local ttl = tonumber(ARGV[7])
local epoch, offset = open_room(ARGV[2], ttl)
epoch, offset = fence(epoch, offset, ARGV[8], ARGV[9], ARGV[2], ttl)
local size, httl = tonumber(ARGV[3]), tonumber(ARGV[4])
local window, max_keys = tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {epoch}
for i = 10, #ARGV, 4 do
  local duplicate
  offset, duplicate = publish_one(now, epoch, ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2],
                                  ARGV[i + 3], size, httl, window, max_keys)
  out[#out + 1] = offset
  out[#out + 1] = duplicate
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return out
