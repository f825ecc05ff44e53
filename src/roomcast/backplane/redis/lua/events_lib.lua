-- Room and user events (protocol §13): a key's transitions are numbered in a hash
-- {seq, down_ms, down_seq, pending}, so every node names a transition alike. A "gone"
-- waits as `pending` (its seq) in that same hash, and in the node-wide due index until it
-- may be sent: whoever clears `pending` first (its node once due, a return within the
-- delay, a return after it, or another node's sweep when its node is gone) is the only one
-- to act on it. Everything here touches the one key, so it runs in the key's own slot.
local function ev_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- none -> some: {1, seq, g, g_ms} when it is news (g > 0: the gone numbered g, at g_ms,
-- was long enough and nobody sent it yet: the caller sends it first), {0, seq, 0, 0}
-- when it ends an absence shorter than delay_ms
local function ev_up(key, delay_ms, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local down_ms = tonumber(redis.call('HGET', key, 'down_ms') or '-1')
  local down_seq = redis.call('HGET', key, 'down_seq') or '0'
  local pending = redis.call('HGET', key, 'pending')
  redis.call('HDEL', key, 'down_ms', 'pending')
  redis.call('PEXPIRE', key, keep_ms)
  if down_ms < 0 or pending ~= down_seq then
    return {1, seq, 0, 0}  -- no absence, or its gone was sent already
  end
  if ev_now() - down_ms < delay_ms then return {0, seq, 0, 0} end
  return {1, seq, tonumber(down_seq), down_ms}
end
-- some -> none: {-1, seq, 0, 0}; the gone waits as `pending` for delay_ms (the caller
-- indexed the key for the sweep before)
local function ev_down(key, delay_ms, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local now = ev_now()
  redis.call('HSET', key, 'down_ms', now, 'down_seq', seq, 'pending', seq)
  redis.call('PEXPIRE', key, keep_ms)
  return {-1, seq, 0, 0}
end
