-- KEYS o e h k kt; ARGV new_epoch ttl since since_epoch httl
-- -> {offset, epoch} or {offset, epoch, recovered, missed_from, missed_to, entries...}
-- (lib.lua is put in front of this script when it is loaded)
local epoch, offset = open_room(ARGV[1], tonumber(ARGV[2]))
if ARGV[3] == '' then return {offset, epoch} end
local since = tonumber(ARGV[3])
if ARGV[4] ~= epoch or since > offset or since < 0 then return {offset, epoch, 0, 0, 0} end
prune(now_ms(), tonumber(ARGV[5]))
if since == offset then return {offset, epoch, 1, 0, 0} end
local n = redis.call('LLEN', KEYS[3])
if n == 0 then return {offset, epoch, 0, since + 1, offset} end
local first = offset - n + 1
local out
if since >= first - 1 then
  out = {offset, epoch, 1, 0, 0}
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], since - first + 1, -1)) do out[#out + 1] = e end
else
  out = {offset, epoch, 0, since + 1, first - 1}
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do out[#out + 1] = e end
end
return out
