-- KEYS o e h k kt; ARGV channel head tail event idem new_epoch size httl window max_keys ttl
-- seen_epoch seen_offset (the highest this node saw in the room, "" 0 for none)
-- (idem is "" for none, else "=" followed by the key)
-- (lib.lua is put in front of this script when it is loaded)
local now = now_ms()
local ttl = tonumber(ARGV[11])
local epoch, offset = open_room(ARGV[6], ttl)
epoch, offset = fence(epoch, offset, ARGV[12], ARGV[13], ARGV[6], ttl)
local idem = ARGV[5]
local window = tonumber(ARGV[9])
if idem ~= '' then
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - window, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', KEYS[5], unpack(old))
    redis.call('HDEL', KEYS[4], unpack(old))
  end
  local seen = redis.call('HGET', KEYS[4], idem)
  if seen then
    local t = redis.call('ZSCORE', KEYS[5], idem)
    if t and now - tonumber(t) < window then return {tonumber(seen), epoch, 1} end
  end
end
offset = redis.call('INCR', KEYS[1])
local soffset = string.format('%d', offset)
local payload = ARGV[2] .. soffset .. ARGV[3]
local size = tonumber(ARGV[7])
local httl = tonumber(ARGV[8])
if size > 0 and httl > 0 then
  redis.call('RPUSH', KEYS[3], string.format('%d', now) .. ' ' .. payload)
  redis.call('LTRIM', KEYS[3], -size, -1)
  prune(now, httl)
  redis.call('PEXPIRE', KEYS[3], httl)
end
if idem ~= '' then
  redis.call('HSET', KEYS[4], idem, offset)
  redis.call('ZADD', KEYS[5], now, idem)
  local extra = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[10])
  if extra > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[5], extra)
    for i = 1, #gone, 2 do redis.call('HDEL', KEYS[4], gone[i]) end
  end
  redis.call('PEXPIRE', KEYS[4], window)
  redis.call('PEXPIRE', KEYS[5], window)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[1], 'm' .. soffset .. ' ' .. epoch .. ' ' .. ARGV[4] .. '\n' .. payload)
return {offset, epoch, 0}
