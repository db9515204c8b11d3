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

-- name: own_holders
-- The holders of this session (share_process_gone does not ask about them: they are the caller).
SELECT set_config('testrack.holders', %(holders)s, false);

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
-- Device time: grants that ended since then, and those still held (an expired one ended at expiry).
SELECT token, run, slots, granted, released FROM testrack.share_grants WHERE released >= %(since)s
UNION ALL
SELECT l.token, min(h.run), count(*)::integer, min(l.granted),
       CASE WHEN min(l.expires) < %(now)s THEN min(l.expires) END
FROM testrack.share_leases l JOIN testrack.share_holders h ON h.id = l.holder_id
GROUP BY l.token;

-- name: state_liveness
-- The server's uptime and the holders whose advisory lock is held (the process-gone signal).
SELECT extract(epoch FROM pg_postmaster_start_time())::double precision,
       coalesce(array_agg(objid::bigint), '{}')
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = 29271 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database());

-- name: force_release
WITH gone AS (
    DELETE FROM testrack.share_leases WHERE slot_id = %(slot_id)s AND token = %(token)s
    RETURNING token, holder_id, granted, expires
), ended AS (
    INSERT INTO testrack.share_grants (token, run, slots, granted, released)
    SELECT gone.token, coalesce(h.run, ''), 1, gone.granted,
           least(testrack.share_now(%(now)s::double precision), gone.expires)
    FROM gone LEFT JOIN testrack.share_holders h ON h.id = gone.holder_id
    ON CONFLICT (token) DO NOTHING
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

-- ---------------------------------------------------------------- the shared run queue

-- name: queue_create_run
INSERT INTO testrack.queue_runs (uid, mode, digest, test_count, retry_budget, store_run_id, created)
VALUES (%(uid)s, %(mode)s, %(digest)s, %(test_count)s, %(retry_budget)s, %(store_run_id)s,
        testrack.share_now(%(now)s::double precision))
ON CONFLICT (uid) DO NOTHING
RETURNING uid;

-- name: queue_devices_of_run
SELECT DISTINCT device FROM testrack.queue_items WHERE run = %(run)s AND device = ANY (%(devices)s::text[]);

-- name: queue_reopen_run
-- Each mode: a late host brings devices that have not run the run's tests; they will.
UPDATE testrack.queue_runs SET finished = NULL WHERE uid = %(run)s;

-- name: queue_run
SELECT uid, mode, digest, test_count, retry_budget, store_run_id, created, finished
FROM testrack.queue_runs WHERE uid = %(uid)s;

-- name: queue_add_tests
-- A run's tests in one statement (arrays, not a statement per test: 1,600 tests took 0.13 s).
INSERT INTO testrack.queue_tests (run, idx, nodeid, estimate)
SELECT %(run)s, t.idx, t.nodeid, t.estimate
FROM unnest(%(idxs)s::integer[], %(nodeids)s::text[], %(estimates)s::double precision[]) AS t (idx, nodeid, estimate);

-- name: queue_add_load_items
INSERT INTO testrack.queue_items (run, idx, device, estimate)
SELECT run, idx, NULL, estimate FROM testrack.queue_tests WHERE run = %(run)s;

-- name: queue_test_ids
SELECT idx, nodeid FROM testrack.queue_tests WHERE run = %(run)s ORDER BY idx;

-- name: queue_host
SELECT h.holder_id, h.left_at,
       coalesce(testrack.share_alive(s.id, s.expires, s.ttl, testrack.share_now(%(now)s::double precision)), false)
FROM testrack.queue_hosts h LEFT JOIN testrack.share_holders s ON s.id = h.holder_id
WHERE h.run = %(run)s AND h.name = %(host)s
FOR UPDATE OF h;

-- name: queue_join_host
INSERT INTO testrack.queue_hosts (run, name, holder_id, joined) VALUES (%(run)s, %(host)s, %(holder_id)s,
                                                                      testrack.share_now(%(now)s::double precision))
ON CONFLICT (run, name) DO UPDATE SET holder_id = excluded.holder_id, joined = excluded.joined, left_at = NULL;

-- name: queue_add_routes
-- A host's routes in one statement (a statement per route made 4 hosts x 6,400 routes take 0.5-0.9 s
-- each, the largest part of a shared run's start). The rows must be distinct: ON CONFLICT may not
-- touch a row twice in one statement.
INSERT INTO testrack.queue_routes (run, device, idx, host)
SELECT %(run)s, r.device, r.idx, %(host)s
FROM unnest(%(devices)s::text[], %(idxs)s::integer[]) AS r (device, idx)
ON CONFLICT (run, device, idx) DO UPDATE SET host = excluded.host;

-- name: queue_add_each_items
INSERT INTO testrack.queue_items (run, idx, device, estimate)
SELECT r.run, r.idx, r.device, t.estimate
FROM testrack.queue_routes r JOIN testrack.queue_tests t ON t.run = r.run AND t.idx = r.idx
WHERE r.run = %(run)s AND r.host = %(host)s
ON CONFLICT (run, idx, coalesce(device, '')) DO NOTHING;

-- name: queue_fence
-- The lease a claim or a result names: held by this holder under this token, not expired. FOR SHARE:
-- nobody can take it over until this transaction ends.
SELECT l.slot_id FROM testrack.share_leases l
WHERE l.token = %(token)s AND l.holder_id = %(holder_id)s
  AND l.expires >= testrack.share_now(%(now)s::double precision)
FOR SHARE;

-- name: queue_claim
-- Guided: with %(among)s slots sharing the queue, a claim takes at most 1/(2 x among) of the tests
-- left (counting no further than where that no longer binds), so that near the end claims shrink
-- and the hosts finish together. among = 0: n as asked.
SELECT item, nodeid, attempts
FROM testrack.queue_claim(
    %(run)s, %(device)s,
    CASE WHEN %(among)s::integer < 1 THEN %(n)s::integer ELSE least(%(n)s::integer, greatest(1, ceil(
        (SELECT count(*) FROM (
            SELECT 1 FROM testrack.queue_items
            WHERE run = %(run)s AND state = 'queued' AND (device IS NULL OR device = %(device)s)
            LIMIT 2 * %(n)s::integer * %(among)s::integer) AS q
        ) / (2.0 * %(among)s::integer))::integer)) END,
    %(holder_id)s::bigint, %(host)s, %(token)s::bigint, %(batch)s);

-- name: queue_claim_test
-- One named test queued for %(device)s (a set's label for a test on several devices), if it still is.
UPDATE testrack.queue_items i
SET state = 'claimed', attempts = i.attempts + 1, started = false, claim_holder = %(holder_id)s,
    claim_host = %(host)s, claim_device = %(device)s, claim_token = %(token)s, claim_batch = %(batch)s
FROM testrack.queue_tests t
WHERE i.id = (
        SELECT q.id FROM testrack.queue_items q
        JOIN testrack.queue_tests qt ON qt.run = q.run AND qt.idx = q.idx
        WHERE q.run = %(run)s AND qt.nodeid = %(nodeid)s AND q.state = 'queued'
          AND (q.device IS NULL OR q.device = %(device)s)
          AND EXISTS (SELECT 1 FROM testrack.queue_routes r
                      WHERE r.run = q.run AND r.device = %(device)s AND r.idx = q.idx)
        LIMIT 1
        FOR UPDATE OF q SKIP LOCKED)
  AND t.run = i.run AND t.idx = i.idx
RETURNING i.id, t.nodeid, i.attempts;

-- name: queue_claimed_batch
-- A claim retried after its commit's answer was lost (the server went away): the same tests again.
SELECT i.id, t.nodeid, i.attempts FROM testrack.queue_items i
JOIN testrack.queue_tests t ON t.run = i.run AND t.idx = i.idx
WHERE i.claim_batch = %(batch)s AND i.state = 'claimed' AND i.claim_token = %(token)s
ORDER BY i.estimate DESC, i.id;

-- name: queue_mark_started
UPDATE testrack.queue_items SET started = true
WHERE id = ANY (%(items)s::bigint[]) AND state = 'claimed' AND claim_token = %(token)s;

-- name: queue_finish_items
-- Fenced: only items still claimed under this token (or already finished under it: a retried commit).
UPDATE testrack.queue_items SET state = 'done', outcome = v.outcome
FROM (SELECT unnest(%(items)s::bigint[]) AS id, unnest(%(outcomes)s::text[]) AS outcome) v
WHERE testrack.queue_items.id = v.id AND state = 'claimed' AND claim_token = %(token)s
RETURNING testrack.queue_items.id;

-- name: queue_already_finished
SELECT id FROM testrack.queue_items
WHERE id = ANY (%(items)s::bigint[]) AND state = 'done' AND claim_token = %(token)s;

-- name: queue_unclaim
UPDATE testrack.queue_items
SET state = 'queued', attempts = attempts - 1, started = false, claim_holder = NULL, claim_host = NULL,
    claim_device = NULL, claim_token = NULL, claim_batch = NULL
WHERE id = ANY (%(items)s::bigint[]) AND state = 'claimed' AND claim_token = %(token)s AND NOT started
RETURNING id;

-- name: queue_recover
SELECT item, nodeid, outcome FROM testrack.queue_recover(%(run)s, %(now)s::double precision);

-- name: queue_leave
UPDATE testrack.queue_hosts SET left_at = testrack.share_now(%(now)s::double precision)
WHERE run = %(run)s AND name = %(host)s;

-- name: queue_finish_run_if_done
-- Finished: every item final and no live host still in the run.
UPDATE testrack.queue_runs q SET finished = testrack.share_now(%(now)s::double precision)
WHERE q.uid = %(run)s AND q.finished IS NULL
  AND NOT EXISTS (SELECT 1 FROM testrack.queue_items i WHERE i.run = q.uid AND i.state <> 'done')
  AND NOT EXISTS (
      SELECT 1 FROM testrack.queue_hosts h JOIN testrack.share_holders s ON s.id = h.holder_id
      WHERE h.run = q.uid AND h.left_at IS NULL
        AND testrack.share_alive(s.id, s.expires, s.ttl, testrack.share_now(%(now)s::double precision)))
RETURNING q.finished;

-- name: queue_counts
SELECT state, count(*) FROM testrack.queue_items WHERE run = %(run)s GROUP BY state;

-- name: queue_outcomes
SELECT outcome, count(*) FROM testrack.queue_items WHERE run = %(run)s AND state = 'done' GROUP BY outcome;

-- name: queue_hosts
SELECT h.name, h.joined, h.left_at,
       coalesce(testrack.share_alive(s.id, s.expires, s.ttl, testrack.share_now(%(now)s::double precision)), false)
FROM testrack.queue_hosts h LEFT JOIN testrack.share_holders s ON s.id = h.holder_id
WHERE h.run = %(run)s ORDER BY h.name;

-- name: queue_fates
SELECT id, state, outcome, claim_host FROM testrack.queue_items WHERE id = ANY (%(items)s::bigint[]);

-- name: queue_routes_of_run
SELECT idx, device, host FROM testrack.queue_routes WHERE run = %(run)s;

-- name: queue_queued_items
SELECT idx, device FROM testrack.queue_items WHERE run = %(run)s AND state = 'queued' ORDER BY idx;

-- name: queue_test_names
SELECT idx, nodeid FROM testrack.queue_tests WHERE run = %(run)s AND idx = ANY (%(idx)s::integer[]);
