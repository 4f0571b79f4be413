-- Least outstanding requests over every live gateway, picked and counted in one step: two gateways taking a
-- request at the same moment spread them, instead of both choosing the same idle engine.
-- KEYS: live gateways, then one load hash per candidate engine, in the caller's order.
-- ARGV: gateway, ttl ms, then this gateway's own exact count on each candidate, in the same order (the gateway
-- picks one request at a time; its stored field may lag, e.g. after Redis restarted empty).
-- Returns {index of the chosen candidate (0-based), its total before this request}; ties go to the first listed.
prune_gateways()
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
local best, best_total = 0, -1
for i = 2, #KEYS do
  local total = tonumber(ARGV[i + 1]) + live_total(KEYS[i], ARGV[1])
  if best_total < 0 or total < best_total then
    best, best_total = i, total
  end
end
redis.call('HSET', KEYS[best], ARGV[1], tonumber(ARGV[best + 1]) + 1)
return {best - 2, best_total}
