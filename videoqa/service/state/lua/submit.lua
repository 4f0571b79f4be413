-- Atomic submit: a gateway dying between "create the record" and "queue it" would otherwise leave a job that
-- every later (idempotent) submit sees as existing but no worker ever receives.
-- KEYS: queue, tenant index, global index. ARGV: record prefix, id, payload, now, tenant.
local key = ARGV[1] .. ARGV[2]
if redis.call('HSETNX', key, 'payload', ARGV[3]) == 0 then return 0 end
redis.call('HSET', key, 'status', 'queued', 'attempts', 0, 'created', ARGV[4], 'updated', ARGV[4], 'tenant', ARGV[5])
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
