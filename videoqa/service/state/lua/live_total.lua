-- Shared by engine_pick, engine_report and engine_totals (prepended when loaded). KEYS[1] is the zset of live
-- gateways (gateway -> expiry in ms); each engine's load hash maps gateway -> requests it has outstanding there.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Forget gateways that stopped reporting (killed, or cut off): their requests are no longer in flight.
local function prune_gateways()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
end

-- Requests outstanding on one engine over the live gateways other than `skip` (the caller adds its own exact
-- count); counts of gateways no longer alive are deleted on the way.
local function live_total(key, skip)
  local total = 0
  local flat = redis.call('HGETALL', key)
  for j = 1, #flat, 2 do
    if flat[j] ~= skip then
      if redis.call('ZSCORE', KEYS[1], flat[j]) then
        total = total + tonumber(flat[j + 1])
      else
        redis.call('HDEL', key, flat[j])
      end
    end
  end
  return total
end
