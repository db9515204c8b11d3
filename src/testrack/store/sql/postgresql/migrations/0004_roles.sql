-- v4 (SQLite store v7): the role a device took in a test on several devices.

ALTER TABLE testrack.results ADD COLUMN role text;
