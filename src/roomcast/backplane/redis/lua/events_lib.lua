-- Room and user events (protocol §13): a key's transitions are numbered in a hash
-- {seq, down_ms, down_seq}, so every node names a transition alike. A "gone" waits in the
-- due ZSET (member "<kind>\0<name>\0<seq>", score: when it may be sent): whoever takes it
-- out first (its node once due, a return within the delay, a return after it, or another
-- node's sweep when its node is gone) is the only one to act on it.
local function ev_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ev_member(kind, name, seq)
  return kind .. '\0' .. name .. '\0' .. seq
end
-- none -> some: {1, seq, g, g_ms} when it is news (g > 0: the gone numbered g, at g_ms, was
-- long enough and nobody sent it yet: the caller sends it first), {0, seq, 0, 0} when it
-- ends an absence shorter than delay_ms
local function ev_up(key, due, kind, name, delay_ms, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local down_ms = tonumber(redis.call('HGET', key, 'down_ms') or '-1')
  local down_seq = redis.call('HGET', key, 'down_seq') or '0'
  redis.call('HDEL', key, 'down_ms')
  redis.call('PEXPIRE', key, keep_ms)
  if down_ms < 0 then return {1, seq, 0, 0} end
  if redis.call('ZREM', due, ev_member(kind, name, down_seq)) == 0 then
    return {1, seq, 0, 0}  -- that gone was sent already
  end
  if ev_now() - down_ms < delay_ms then return {0, seq, 0, 0} end
  return {1, seq, tonumber(down_seq), down_ms}
end
-- some -> none: {-1, seq, 0, 0}; the gone waits in `due` for delay_ms
local function ev_down(key, due, kind, name, delay_ms, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local now = ev_now()
  redis.call('HSET', key, 'down_ms', now, 'down_seq', seq)
  redis.call('PEXPIRE', key, keep_ms)
  redis.call('ZADD', due, now + delay_ms, ev_member(kind, name, seq))
  return {-1, seq, 0, 0}
end
