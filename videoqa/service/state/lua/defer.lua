-- The engine was busy: back to the queue after `delay` seconds, and the delivery does not count as an attempt.
-- KEYS: leases, delayed. ARGV: record prefix, id, now, worker, delay s.
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[4]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
local at = tonumber(ARGV[3]) + tonumber(ARGV[5])
redis.call('HSET', key, 'status', 'queued', 'updated', ARGV[3], 'not_before', at)
redis.call('HINCRBY', key, 'attempts', -1)
redis.call('HINCRBY', key, 'deferrals', 1)
redis.call('ZADD', KEYS[2], at, ARGV[2])
return 1
