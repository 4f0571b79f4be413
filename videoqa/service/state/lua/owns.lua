-- Shared by complete, fail, defer and heartbeat (prepended when loaded): only the worker holding the job's
-- current lease (worker field, status running, still in the lease set KEYS[1]) may act; anyone else is a worker
-- whose lease lapsed and whose job may be queued again or running elsewhere: acting for it would deliver the
-- job twice or drop the new owner's lease.
local function owns(key, id, worker)
  return redis.call('HGET', key, 'worker') == worker and redis.call('HGET', key, 'status') == 'running'
    and redis.call('ZSCORE', KEYS[1], id) ~= false
end
