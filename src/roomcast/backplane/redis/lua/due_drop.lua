-- KEYS due; ARGV member score [new_score]: re-date the entry (new_score given) or drop it,
-- unless another node indexed it anew meanwhile (its score changed)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
