-- A gateway's heartbeat and its exact counts (it is the only writer of its own fields, so rewriting them undoes
-- any drift: a lost update, a Redis that restarted empty).
-- KEYS: live gateways, then one load hash per engine. ARGV: gateway, ttl ms, then its count on each engine.
prune_gateways()
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
for i = 2, #KEYS do
  local n = tonumber(ARGV[i + 1])
  if n > 0 then
    redis.call('HSET', KEYS[i], ARGV[1], n)
  else
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 1
