-- Out of the queue, the backoff set and the lease set: no worker claims it and the current one's lease is gone.
-- KEYS: queue, leases, delayed. ARGV: record prefix, id, now, record TTL.
local key = ARGV[1] .. ARGV[2]
local status = redis.call('HGET', key, 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('LREM', KEYS[1], 0, ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('HSET', key, 'status', 'cancelled', 'updated', ARGV[3])
redis.call('EXPIRE', key, ARGV[4])
return 1
