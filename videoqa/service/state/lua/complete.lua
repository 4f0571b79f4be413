-- KEYS: leases. ARGV: record prefix, id, result, now, worker, record TTL.
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[5]) then return 0 end
redis.call('HSET', key, 'status', 'succeeded', 'result', ARGV[3], 'updated', ARGV[4])
redis.call('HDEL', key, 'error')
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('EXPIRE', key, ARGV[6])
return 1
