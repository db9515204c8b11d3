-- v3 (SQLite store v6): the environments ([[environments]]) a run's results come from.

CREATE TABLE testrack.environments (
    run_id bigint NOT NULL,
    name text NOT NULL,
    implementation text NOT NULL,
    version text NOT NULL,
    installed text NOT NULL
);
CREATE INDEX environments_by_run ON testrack.environments (run_id);
