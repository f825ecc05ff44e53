-- KEYS revoked; ARGV channel message jti forget_at(unix s) now(unix s)
local old = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not old or tonumber(old) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
