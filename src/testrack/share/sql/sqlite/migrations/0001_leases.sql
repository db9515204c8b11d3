-- The lease contract on one machine: devices and their slots, holders, leases, the wait queue,
-- the grants (fencing tokens and device time) and the shared quarantine.

CREATE TABLE devices (
    name TEXT PRIMARY KEY,
    capacity INTEGER NOT NULL CHECK (capacity >= 1),
    address TEXT NOT NULL DEFAULT ''
);

CREATE TABLE quarantines (
    device TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    run TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE holders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'person')),
    priority INTEGER NOT NULL,
    ttl REAL NOT NULL,
    started REAL NOT NULL,
    expires REAL NOT NULL
);

-- One row per grant: AUTOINCREMENT never reuses a number, so tokens only grow.
CREATE TABLE grants (
    token INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    slots INTEGER NOT NULL,
    granted REAL NOT NULL,
    released REAL
);
CREATE INDEX grants_by_run ON grants (run, granted);

-- At most one lease per slot (the primary key): two holders of one slot cannot be written.
CREATE TABLE leases (
    device TEXT NOT NULL,
    slot INTEGER NOT NULL,
    token INTEGER NOT NULL REFERENCES grants (token),
    holder_id INTEGER NOT NULL,
    granted REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (device, slot)
);
CREATE INDEX leases_by_holder ON leases (holder_id);

CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    holder_id INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    since REAL NOT NULL
);

CREATE TABLE request_slots (
    request_id INTEGER NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (request_id, device, slot)
);
