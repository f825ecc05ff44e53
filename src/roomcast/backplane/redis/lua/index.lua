-- KEYS idx; ARGV add(1/0) ttl_ms member...: a node's index of its presence entries
if ARGV[1] == '1' then
  redis.call('SADD', KEYS[1], unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
else
  redis.call('SREM', KEYS[1], unpack(ARGV, 3))
end
return 1
