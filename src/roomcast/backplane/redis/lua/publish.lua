-- KEYS o e h k kt; ARGV channel head tail event idem new_epoch size httl window max_keys ttl
-- seen_epoch seen_offset (the highest this node saw in the room, "" 0 for none)
-- (idem is "" for none, else "=" followed by the key)
-- (lib.lua is put in front of this script when it is loaded)
local now = now_ms()
local ttl = tonumber(ARGV[11])
local epoch, offset = open_room(ARGV[6], ttl)
epoch, offset = fence(epoch, offset, ARGV[12], ARGV[13], ARGV[6], ttl)
local duplicate
offset, duplicate = publish_one(now, epoch, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
                                tonumber(ARGV[10]))
if duplicate == 1 then return {offset, epoch, 1} end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {offset, epoch, 0}
