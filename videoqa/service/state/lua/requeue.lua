-- Jobs whose lease ran out (worker died or hung) go back to the queue, or fail after max attempts.
-- KEYS: leases, queue. ARGV: now, record prefix, max attempts, failed TTL.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. id
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
  if attempts < tonumber(ARGV[3]) then
    redis.call('HSET', key, 'status', 'queued', 'updated', ARGV[1])
    redis.call('LPUSH', KEYS[2], id)
  else
    redis.call('HSET', key, 'status', 'failed', 'updated', ARGV[1], 'error', '{"message": "worker lost too many times"}')
    redis.call('EXPIRE', key, ARGV[4])
  end
end
return #ids
