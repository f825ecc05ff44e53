-- KEYS key...; ARGV ttl_ms: keeps live rooms' keys (all of one slot) from expiring
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ARGV[1]) end
return 1
