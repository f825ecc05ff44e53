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
-- One message into the open stream (epoch as open_room and fence left it): the idempotency
-- key checked, the next offset assigned, the entry kept in history and SPUBLISHed; returns
-- the offset and 1 when the key repeated a publish within the window (nothing done), else 0.
local function publish_one(now, epoch, channel, head, tail, event, idem, size, httl, window,
                           max_keys)
  if idem ~= '' then
    local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - window, 'LIMIT', 0, 100)
    if #old > 0 then
      redis.call('ZREM', KEYS[5], unpack(old))
      redis.call('HDEL', KEYS[4], unpack(old))
    end
    local seen = redis.call('HGET', KEYS[4], idem)
    if seen then
      local t = redis.call('ZSCORE', KEYS[5], idem)
      if t and now - tonumber(t) < window then return tonumber(seen), 1 end
    end
  end
  local offset = redis.call('INCR', KEYS[1])
  local soffset = string.format('%d', offset)
  local payload = head .. soffset .. tail
  if size > 0 and httl > 0 then
    redis.call('RPUSH', KEYS[3], string.format('%d', now) .. ' ' .. payload)
    redis.call('LTRIM', KEYS[3], -size, -1)
    prune(now, httl)
    redis.call('PEXPIRE', KEYS[3], httl)
  end
  if idem ~= '' then
    redis.call('HSET', KEYS[4], idem, offset)
    redis.call('ZADD', KEYS[5], now, idem)
    local extra = redis.call('ZCARD', KEYS[5]) - max_keys
    if extra > 0 then
      local gone = redis.call('ZPOPMIN', KEYS[5], extra)
      for i = 1, #gone, 2 do redis.call('HDEL', KEYS[4], gone[i]) end
    end
    redis.call('PEXPIRE', KEYS[4], window)
    redis.call('PEXPIRE', KEYS[5], window)
  end
  redis.call('SPUBLISH', channel, 'm' .. soffset .. ' ' .. epoch .. ' ' .. event .. '\n' .. payload)
  return offset, 0
end
