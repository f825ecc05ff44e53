-- Helpers shared by the stream scripts (publish, position, history), which take the
-- room's keys in the order o e h k kt; put in front of each of them when loaded.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The room's epoch and offset; a new epoch and an empty stream when either is gone.
local function open_room(new_epoch, ttl)
  local epoch = redis.call('GET', KEYS[2])
  local offset = redis.call('GET', KEYS[1])
  if epoch and offset then return epoch, tonumber(offset) end
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[2], new_epoch, 'PX', ttl)
  redis.call('SET', KEYS[1], 0, 'PX', ttl)
  return new_epoch, 0
end
-- A counter behind the offset a node saw under the same epoch means Redis lost acknowledged
-- writes (failover, old snapshot): end the stream (new epoch, empty) rather than assign an
-- offset of that epoch twice.
local function fence(epoch, offset, seen_epoch, seen_offset, new_epoch, ttl)
  if epoch ~= seen_epoch or offset >= tonumber(seen_offset) then return epoch, offset end
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[2], new_epoch, 'PX', ttl)
  redis.call('SET', KEYS[1], 0, 'PX', ttl)
  return new_epoch, 0
end
-- Drop history entries older than httl ms (the list is oldest first).
local function prune(now, httl)
  while true do
    local first = redis.call('LINDEX', KEYS[3], 0)
    if not first then return end
    local t = tonumber(string.sub(first, 1, string.find(first, ' ', 1, true) - 1))
    if t > now - httl then return end
    redis.call('LPOP', KEYS[3])
  end
end
