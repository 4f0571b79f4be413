-- Outstanding requests per engine over every live gateway. KEYS: live gateways, then one load hash per engine.
prune_gateways()
local totals = {}
for i = 2, #KEYS do
  totals[i - 1] = live_total(KEYS[i], '')
end
return totals
