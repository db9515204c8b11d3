-- The SQLite share's queries. The decisions (who is alive, who may be granted) are made in
-- Python by testrack.share.rules over the rows these read, inside one BEGIN IMMEDIATE
-- transaction, so every decision sees the whole share at one moment.

-- name: devices
SELECT name, capacity, address FROM devices ORDER BY name;

-- name: upsert_device
INSERT INTO devices (name, capacity, address) VALUES (:name, :capacity, :address)
ON CONFLICT (name) DO UPDATE SET
    capacity = max(capacity, excluded.capacity),
    address = CASE WHEN address = '' THEN excluded.address ELSE address END;

-- name: holders
SELECT id, run, host, pid, pid_start, label, kind, priority, ttl, started, expires FROM holders;

-- name: insert_holder
INSERT INTO holders (run, host, pid, pid_start, label, kind, priority, ttl, started, expires)
VALUES (:run, :host, :pid, :pid_start, :label, :kind, :priority, :ttl, :now, :now + :ttl);

-- name: renew_holder
UPDATE holders SET expires = :now + ttl WHERE id = :holder_id;

-- name: delete_holder
DELETE FROM holders WHERE id = :holder_id;

-- name: leases
SELECT device, slot, token, holder_id, granted, expires FROM leases;

-- name: insert_lease
INSERT INTO leases (device, slot, token, holder_id, granted, expires)
VALUES (:device, :slot, :token, :holder_id, :now, :expires);

-- name: renew_lease
UPDATE leases SET expires = :expires
WHERE holder_id = :holder_id AND token = :token AND expires >= :now;

-- name: delete_lease
DELETE FROM leases WHERE device = :device AND slot = :slot;

-- name: insert_grant
INSERT INTO grants (run, slots, granted) VALUES (:run, :slots, :now);

-- name: end_grant
UPDATE grants SET released = :released WHERE token = :token AND released IS NULL;

-- name: grants_since
SELECT token, run, slots, granted, released FROM grants WHERE released IS NULL OR released >= :since;

-- name: forget_old_grants
DELETE FROM grants WHERE released < :before;

-- name: requests
SELECT r.id, r.holder_id, r.priority, r.since, s.device, s.slot
FROM requests r JOIN request_slots s ON s.request_id = r.id
ORDER BY r.id, s.device, s.slot;

-- name: insert_request
INSERT INTO requests (holder_id, priority, since) VALUES (:holder_id, :priority, :now);

-- name: insert_request_slot
INSERT INTO request_slots (request_id, device, slot) VALUES (:request_id, :device, :slot);

-- name: delete_request
DELETE FROM requests WHERE id = :request_id;

-- name: delete_requests_of
DELETE FROM requests WHERE holder_id = :holder_id;

-- name: quarantines
SELECT device, reason, run, at FROM quarantines;

-- name: set_quarantine
INSERT OR REPLACE INTO quarantines (device, reason, run, at) VALUES (:device, :reason, :run, :now);

-- name: clear_quarantine
DELETE FROM quarantines WHERE device = :device;
