-- Retry (while attempts last) after `delay` seconds, or fail for good (the record then expires).
-- KEYS: leases, queue, delayed. ARGV: record prefix, id, error, now, retry 1|0, max attempts, worker, delay s,
-- failed TTL.
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[7]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
redis.call('HSET', key, 'error', ARGV[3], 'updated', ARGV[4])
if ARGV[5] == '1' and attempts < tonumber(ARGV[6]) then
  redis.call('HSET', key, 'status', 'queued')
  if tonumber(ARGV[8]) > 0 then
    local at = tonumber(ARGV[4]) + tonumber(ARGV[8])
    redis.call('HSET', key, 'not_before', at)
    redis.call('ZADD', KEYS[3], at, ARGV[2])
  else
    redis.call('LPUSH', KEYS[2], ARGV[2])
  end
else
  redis.call('HSET', key, 'status', 'failed')
  redis.call('EXPIRE', key, ARGV[9])
end
return 1
