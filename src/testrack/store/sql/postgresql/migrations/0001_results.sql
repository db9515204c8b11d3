-- The results store on PostgreSQL: the same contract as store/sqlite.py (its schema v3), in the
-- schema testrack, so that hosts of one shared run write one history, and a shared run's result
-- commits in the same transaction as its lease's fence check (share/sql/postgresql).

CREATE TABLE testrack.runs (
    id bigserial PRIMARY KEY,
    uid text NOT NULL UNIQUE,
    started double precision NOT NULL,
    finished double precision,
    mode text NOT NULL,
    rack text NOT NULL,
    command text NOT NULL,
    outcome text
);

CREATE TABLE testrack.results (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES testrack.runs (id),
    nodeid text NOT NULL,
    device text NOT NULL,
    worker text NOT NULL,
    outcome text NOT NULL,
    duration double precision NOT NULL,
    started double precision NOT NULL,
    stopped double precision NOT NULL,
    position integer NOT NULL DEFAULT 0,
    message text
);
CREATE INDEX results_by_run ON testrack.results (run_id);
CREATE INDEX results_by_test ON testrack.results (nodeid);

CREATE TABLE testrack.imports (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES testrack.runs (id),
    module text NOT NULL,
    worker text NOT NULL,
    device text NOT NULL,
    seconds double precision NOT NULL
);
CREATE INDEX imports_by_run ON testrack.imports (run_id);

CREATE TABLE testrack.identities (
    device text PRIMARY KEY,
    identity text NOT NULL,
    pinned double precision NOT NULL,
    run_id bigint
);

CREATE TABLE testrack.quarantines (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    device text NOT NULL,
    reason text NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX quarantines_by_run ON testrack.quarantines (run_id);
