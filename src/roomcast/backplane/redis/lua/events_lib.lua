-- Room and user events (protocol §13): a key's transitions are numbered in a hash
-- {seq, down_ms, down_seq, confirmed}, so every node names a transition alike.
local function ev_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- none -> some: {1, seq, confirmed gone or 0} when it is news, {0, seq, 0} when it ends an
-- absence shorter than delay_ms that nobody was told of
local function ev_up(key, delay_ms, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  local down_ms = tonumber(redis.call('HGET', key, 'down_ms') or '-1')
  local down_seq = tonumber(redis.call('HGET', key, 'down_seq') or '0')
  local confirmed = tonumber(redis.call('HGET', key, 'confirmed') or '0')
  redis.call('HDEL', key, 'down_ms')
  redis.call('PEXPIRE', key, keep_ms)
  if down_ms < 0 then return {1, seq, 0} end
  if confirmed ~= down_seq and ev_now() - down_ms < delay_ms then return {0, seq, 0} end
  redis.call('HSET', key, 'confirmed', down_seq)
  return {1, seq, down_seq}
end
-- some -> none: {-1, seq}
local function ev_down(key, keep_ms)
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  redis.call('HSET', key, 'down_ms', ev_now(), 'down_seq', seq)
  redis.call('PEXPIRE', key, keep_ms)
  return {-1, seq, 0}
end
