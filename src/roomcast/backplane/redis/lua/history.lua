-- KEYS o e h k kt; ARGV new_epoch ttl since limit httl -> {offset, epoch, entries...}
-- (lib.lua is put in front of this script when it is loaded)
local epoch, offset = open_room(ARGV[1], tonumber(ARGV[2]))
local limit = tonumber(ARGV[4])
prune(now_ms(), tonumber(ARGV[5]))
local n = redis.call('LLEN', KEYS[3])
local out = {offset, epoch}
if limit <= 0 or n == 0 then return out end
local entries
if ARGV[3] == '' then
  entries = redis.call('LRANGE', KEYS[3], -limit, -1)
else
  local skip = math.max(tonumber(ARGV[3]) - (offset - n + 1) + 1, 0)
  entries = redis.call('LRANGE', KEYS[3], skip, skip + limit - 1)
end
for _, e in ipairs(entries) do out[#out + 1] = e end
return out
