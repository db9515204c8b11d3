-- Roles and grants for a lab's testrack share (see docs/sharing.md, "Roles and grants").
-- Run as the admin who owns the schema testrack (it exists once the admin has run
-- `testrack status --share URL` once), again after every testrack upgrade:
--     psql "postgresql://admin@db.lab/racks" -f roles.sql
-- Then give each login role one group:
--     CREATE ROLE ci_runner_7 LOGIN PASSWORD '...' IN ROLE testrack_runner;
--     CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE testrack_bench;
-- An admin is a member of the schema's owner: GRANT <owner> TO bob;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'testrack_runner') THEN
        CREATE ROLE testrack_runner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'testrack_bench') THEN
        CREATE ROLE testrack_bench NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA testrack TO testrack_runner, testrack_bench;
GRANT SELECT ON ALL TABLES IN SCHEMA testrack TO testrack_runner, testrack_bench;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA testrack TO testrack_runner, testrack_bench;

-- Both hold leases (row security keeps each role to its own): runs, and people's reservations.
GRANT INSERT, UPDATE, DELETE ON testrack.share_holders, testrack.share_leases, testrack.share_requests
    TO testrack_runner, testrack_bench;
GRANT INSERT, UPDATE, DELETE ON testrack.share_grants TO testrack_runner, testrack_bench;
GRANT UPDATE ON testrack.share_slots TO testrack_runner, testrack_bench;  -- SELECT ... FOR UPDATE (schema 3 and before)

-- Runs register devices, set and clear the shared quarantine, run shared runs and write results.
GRANT INSERT, UPDATE ON testrack.share_devices, testrack.share_slots TO testrack_runner;
GRANT INSERT, UPDATE, DELETE ON testrack.share_quarantines TO testrack_runner;
GRANT INSERT, UPDATE ON testrack.queue_runs, testrack.queue_tests, testrack.queue_hosts, testrack.queue_routes,
    testrack.queue_items TO testrack_runner;
GRANT INSERT, UPDATE ON testrack.runs, testrack.results, testrack.imports, testrack.quarantines TO testrack_runner;
GRANT INSERT, UPDATE, DELETE ON testrack.identities TO testrack_runner;
