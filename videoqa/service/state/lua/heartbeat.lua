-- Atomic: a lease is only extended for the job's current owner while it is still leased, so a heartbeat that
-- races a requeue cannot resurrect a lease for a job that is already back in the queue (it would run twice).
-- KEYS: leases. ARGV: record prefix, id, worker, lease until.
local key = ARGV[1] .. ARGV[2]
if not owns(key, ARGV[2], ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
return 1
