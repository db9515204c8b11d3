-- The PostgreSQL results store's queries (%(name)s placeholders, as psycopg takes them).

-- name: begin_run
WITH new AS (
    INSERT INTO testrack.runs (uid, started, mode, rack, command, revision, seed)
    VALUES (%(uid)s, %(started)s, %(mode)s, %(rack)s, %(command)s, %(revision)s, %(seed)s)
    ON CONFLICT (uid) DO NOTHING
    RETURNING id
)
SELECT id FROM new UNION ALL SELECT id FROM testrack.runs WHERE uid = %(uid)s LIMIT 1;

-- name: run_id
-- (begin_run finds nothing when another host inserted the same uid after its snapshot: ask again.)
SELECT id FROM testrack.runs WHERE uid = %(uid)s;

-- name: add_result
INSERT INTO testrack.results (run_id, nodeid, device, worker, outcome, duration, started, stopped, position, message,
                              longrepr, sections, role)
VALUES (%(run_id)s, %(nodeid)s, %(device)s, %(worker)s, %(outcome)s, %(duration)s, %(started)s, %(stopped)s,
        %(position)s, %(message)s, %(longrepr)s, %(sections)s, %(role)s);

-- name: add_import
INSERT INTO testrack.imports (run_id, module, worker, device, seconds)
VALUES (%(run_id)s, %(module)s, %(worker)s, %(device)s, %(seconds)s);

-- name: finish_run
UPDATE testrack.runs SET finished = %(finished)s, outcome = %(outcome)s WHERE id = %(run_id)s;

-- name: runs
SELECT id, uid, started, mode, rack, command, finished, outcome, revision, seed FROM testrack.runs ORDER BY id DESC LIMIT %(limit)s;

-- name: results
SELECT nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id, role
FROM testrack.results WHERE run_id = %(run_id)s ORDER BY id;

-- name: results_with_details
SELECT nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id, role, longrepr, sections
FROM testrack.results WHERE run_id = %(run_id)s ORDER BY id;

-- name: outcomes
SELECT run_id, nodeid, outcome FROM testrack.results WHERE run_id = ANY(%(run_ids)s);

-- name: failing_results
-- Each failure that no later conclusive result of the same test on the same device follows.
SELECT nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id FROM testrack.results f
WHERE f.outcome = ANY(%(failing)s) AND f.run_id <> %(exclude)s
  AND NOT EXISTS (SELECT 1 FROM testrack.results later
                  WHERE later.nodeid = f.nodeid AND later.device = f.device AND later.id > f.id
                    AND later.outcome = ANY(%(conclusive)s) AND later.run_id <> %(exclude)s)
ORDER BY nodeid, device;

-- name: imports
SELECT module, worker, device, seconds FROM testrack.imports WHERE run_id = %(run_id)s ORDER BY id;

-- name: history
SELECT r.nodeid, r.device, r.worker, r.outcome, r.duration, r.started, r.stopped, r.position, r.message, r.run_id,
       u.id, u.uid, u.started, u.mode, u.rack, u.command, u.finished, u.outcome, u.revision, u.seed, r.role
FROM testrack.results r JOIN testrack.runs u ON u.id = r.run_id
WHERE r.nodeid = %(nodeid)s ORDER BY r.id DESC LIMIT %(limit)s;

-- name: recent_results
SELECT nodeid, device, worker, outcome, duration, started, stopped, position, message, run_id
FROM testrack.results
WHERE run_id IN (SELECT id FROM testrack.runs ORDER BY id DESC LIMIT %(runs)s) ORDER BY id;

-- name: timings
SELECT nodeid, outcome, duration FROM testrack.results
WHERE run_id IN (SELECT id FROM testrack.runs ORDER BY id DESC LIMIT %(runs)s);

-- name: import_costs
SELECT module, worker, device, seconds FROM testrack.imports
WHERE run_id IN (SELECT id FROM testrack.runs ORDER BY id DESC LIMIT %(runs)s) ORDER BY id;

-- name: pinned_identity
SELECT device, identity, pinned, run_id FROM testrack.identities WHERE device = %(device)s;

-- name: pin_identity
INSERT INTO testrack.identities (device, identity, pinned, run_id) VALUES (%(device)s, %(identity)s, %(pinned)s, %(run_id)s)
ON CONFLICT (device) DO UPDATE SET identity = excluded.identity, pinned = excluded.pinned, run_id = excluded.run_id;

-- name: forget_identity
DELETE FROM testrack.identities WHERE device = %(device)s;

-- name: identities
SELECT device, identity, pinned, run_id FROM testrack.identities ORDER BY device;

-- name: add_quarantine
INSERT INTO testrack.quarantines (run_id, device, reason, at) VALUES (%(run_id)s, %(device)s, %(reason)s, %(at)s);

-- name: quarantines
SELECT run_id, device, reason, at FROM testrack.quarantines WHERE run_id = %(run_id)s ORDER BY id;

-- name: add_environment
INSERT INTO testrack.environments (run_id, name, implementation, version, installed)
VALUES (%(run_id)s, %(name)s, %(implementation)s, %(version)s, %(installed)s);

-- name: environments
SELECT run_id, name, implementation, version, installed FROM testrack.environments
WHERE run_id = %(run_id)s ORDER BY name;
