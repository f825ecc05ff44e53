-- KEYS due; ARGV member -> 1 when this caller took the gone out (it is still gone: a
-- return would have taken it) and so is the one to send it
return redis.call('ZREM', KEYS[1], ARGV[1])
