-- ARGV prefix room_ttl presence_ttl n_watched room... ; keeps live rooms' keys from expiring
local n = tonumber(ARGV[4])
for i = 5, #ARGV do
  local base = ARGV[1] .. '{' .. ARGV[i] .. '}:'
  if i - 4 <= n then
    redis.call('PEXPIRE', base .. 'o', ARGV[2])
    redis.call('PEXPIRE', base .. 'e', ARGV[2])
  else
    redis.call('PEXPIRE', base .. 'p', ARGV[3])
    redis.call('PEXPIRE', base .. 'pu', ARGV[3])
  end
end
return 1
