-- KEYS due; ARGV member delay_ms: index a room or user ("<kind>\0<name>") whose gone may
-- be pending from now on, before the script that may make it (so a node that dies right
-- after still leaves it for another node's sweep); an earlier date stays (LT), so indexing
-- again never puts off the sweep of a gone pending already
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'LT', now + tonumber(ARGV[2]), ARGV[1])
return 1
