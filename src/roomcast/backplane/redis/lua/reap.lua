-- KEYS nodes nodestats idx; ARGV node only_if_dead -> {state, member...}
-- One step of reaping a node: up to 100 of its index entries ("<room>\0<user>", or
-- "\0<user>" for its connections of a user) for the caller to remove in their own slots
-- (reap_room, reap_user) and then from the index; state 0 while entries remain, 1 once
-- the index is empty (the node is then forgotten), 2 when the node is alive after all.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) > now then return {2} end
end
local members = redis.call('SRANDMEMBER', KEYS[3], 100)
if #members == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {1}
end
local out = {0}
for _, m in ipairs(members) do out[#out + 1] = m end
return out
