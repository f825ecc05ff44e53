-- KEYS revoked; ARGV now(unix s) -> {jti, forget_at, ...} still in force
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
