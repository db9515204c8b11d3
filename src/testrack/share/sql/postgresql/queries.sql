-- The PostgreSQL share's queries (the hot paths are functions in migrations/0001_leases.sql).
-- %(name)s placeholders, as psycopg takes them.

-- name: now
SELECT testrack.share_now(%(now)s::double precision);

-- name: upsert_device
INSERT INTO testrack.share_devices (name, capacity, address) VALUES (%(name)s, %(capacity)s, %(address)s)
ON CONFLICT (name) DO UPDATE SET
    capacity = greatest(testrack.share_devices.capacity, excluded.capacity),
    address = CASE WHEN testrack.share_devices.address = '' THEN excluded.address
                   ELSE testrack.share_devices.address END;

-- name: add_slots
INSERT INTO testrack.share_slots (device, slot)
SELECT %(name)s, s FROM generate_series(0, %(capacity)s - 1) AS s
ON CONFLICT (device, slot) DO NOTHING;

-- name: devices
SELECT name, capacity, address FROM testrack.share_devices ORDER BY name;

-- name: slots
SELECT id, device, slot FROM testrack.share_slots;

-- name: add_holder
SELECT testrack.share_add_holder(%(run)s, %(host)s, %(pid)s::integer, %(label)s, %(kind)s, %(priority)s::integer,
                                  %(ttl)s::double precision, %(now)s::double precision);

-- name: relock_holder
SELECT pg_advisory_lock(29271, (%(holder_id)s::bigint %% 2147483647)::integer);

-- name: unlock_holder
SELECT pg_advisory_unlock(29271, (%(holder_id)s::bigint %% 2147483647)::integer);

-- name: forget_the_dead
SELECT testrack.share_forget_the_dead(%(now)s::double precision);

-- name: remove_holder
SELECT testrack.share_remove_holder(%(holder_id)s::bigint, %(now)s::double precision);

-- name: request
SELECT request, status, token, granted, expires FROM testrack.share_request(%(holder_id)s::bigint, %(slots)s::integer[], %(priority)s::integer, %(now)s::double precision);

-- name: try_grant
SELECT status, token, granted, expires FROM testrack.share_try_grant(%(request_id)s::bigint, %(now)s::double precision);

-- name: cancel
DELETE FROM testrack.share_requests WHERE id = %(request_id)s;

-- name: renew
SELECT testrack.share_renew(%(holder_id)s::bigint, %(tokens)s::bigint[], %(now)s::double precision);

-- name: release
SELECT testrack.share_release(%(holder_id)s::bigint, %(token)s::bigint, %(now)s::double precision);

-- name: drop_requests_of
DELETE FROM testrack.share_requests WHERE holder_id = ANY (%(holders)s::bigint[]);

-- name: state_holders
SELECT id, run, host, pid, label, kind, priority, ttl, started, expires FROM testrack.share_holders;

-- name: state_leases
SELECT l.slot_id, l.token, l.holder_id, l.granted, l.expires FROM testrack.share_leases l;

-- name: state_requests
SELECT id, holder_id, priority, slot_ids, since FROM testrack.share_requests;

-- name: state_quarantines
SELECT device, reason, run, at FROM testrack.share_quarantines;

-- name: state_grants
SELECT token, run, slots, granted, released FROM testrack.share_grants
WHERE released IS NULL OR released >= %(since)s;

-- name: state_liveness
-- The server's uptime and the holders whose advisory lock is held (the process-gone signal).
SELECT extract(epoch FROM pg_postmaster_start_time())::double precision,
       coalesce(array_agg(objid::bigint), '{}')
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = 29271 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database());

-- name: force_release
WITH gone AS (
    DELETE FROM testrack.share_leases WHERE slot_id = %(slot_id)s AND token = %(token)s RETURNING token, expires
), ended AS (
    UPDATE testrack.share_grants g SET released = least(testrack.share_now(%(now)s::double precision), gone.expires) FROM gone
    WHERE g.token = gone.token AND g.released IS NULL
)
SELECT count(*) FROM gone;

-- name: lease_owner
SELECT owner FROM testrack.share_leases WHERE slot_id = %(slot_id)s AND token = %(token)s;

-- name: notify
SELECT pg_notify('testrack_share', %(slots)s);

-- name: set_quarantine
INSERT INTO testrack.share_quarantines (device, reason, run, at) VALUES (%(device)s, %(reason)s, %(run)s, testrack.share_now(%(now)s::double precision))
ON CONFLICT (device) DO UPDATE SET reason = excluded.reason, run = excluded.run, at = excluded.at;

-- name: clear_quarantine
DELETE FROM testrack.share_quarantines WHERE device = %(device)s;
