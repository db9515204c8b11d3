-- v2 (SQLite store v4 and v5): a failing result's full text and captured output, for the report;
-- the code revision each run ran and the seed of its random order.

ALTER TABLE testrack.results ADD COLUMN longrepr text;
ALTER TABLE testrack.results ADD COLUMN sections jsonb;
ALTER TABLE testrack.runs ADD COLUMN revision text;
ALTER TABLE testrack.runs ADD COLUMN seed bigint;
