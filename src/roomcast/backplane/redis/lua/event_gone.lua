-- KEYS ev count; ARGV seq -> 1 when the "gone" numbered seq still holds (and is now told)
local seq = redis.call('HGET', KEYS[1], 'seq')
local confirmed = redis.call('HGET', KEYS[1], 'confirmed')
if confirmed == ARGV[1] then return 1 end
if seq == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[1], 'confirmed', ARGV[1])
  return 1
end
return 0
