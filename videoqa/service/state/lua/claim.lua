-- Due delayed jobs (backoff over) join the queue, then the oldest queued job goes to the caller with a lease.
-- RPOP + ZADD in one script: two workers can never claim one job.
-- KEYS: queue, leases, delayed. ARGV: lease until, worker, record prefix, now.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  if redis.call('HGET', ARGV[3] .. id, 'status') == 'queued' then
    redis.call('HSET', ARGV[3] .. id, 'not_before', 0)
    redis.call('LPUSH', KEYS[1], id)
  end
end
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('ZADD', KEYS[2], ARGV[1], id)
local key = ARGV[3] .. id
redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'updated', ARGV[4])
redis.call('HINCRBY', key, 'attempts', 1)
return id
