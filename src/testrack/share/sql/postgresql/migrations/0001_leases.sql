-- The lease contract for many hosts. The hot paths (request, try_grant, renew, release) are
-- functions, so each is one round trip and holds its row locks for microseconds; the rules are
-- those of testrack/share/rules.py, spelled in SQL.
--
-- Liveness: a holder is alive while its heartbeat has not run out (expires >= now) and its
-- session advisory lock (classid 29271 = 0x7e57, objid = holder id) is held -- the lock counts
-- only once the server has been up longer than the holder's ttl, so that holders can reconnect
-- and take their lock again after a restart.

CREATE TABLE testrack.share_devices (
    name text PRIMARY KEY,
    capacity integer NOT NULL CHECK (capacity >= 1),
    address text NOT NULL DEFAULT ''
);

CREATE TABLE testrack.share_slots (
    id serial PRIMARY KEY,
    device text NOT NULL REFERENCES testrack.share_devices (name),
    slot integer NOT NULL,
    UNIQUE (device, slot)
);

CREATE TABLE testrack.share_quarantines (
    device text PRIMARY KEY,
    reason text NOT NULL,
    run text NOT NULL,
    at double precision NOT NULL
);

CREATE TABLE testrack.share_holders (
    id bigserial PRIMARY KEY,
    run text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    label text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('run', 'person')),
    priority integer NOT NULL,
    ttl double precision NOT NULL,
    started double precision NOT NULL,
    expires double precision NOT NULL,
    owner name NOT NULL DEFAULT current_user
);

-- Fencing tokens: one sequence, so a token is larger than every token granted before it.
CREATE SEQUENCE testrack.share_tokens;

CREATE TABLE testrack.share_grants (
    token bigint PRIMARY KEY,
    run text NOT NULL,
    slots integer NOT NULL,
    granted double precision NOT NULL,
    released double precision
);
CREATE INDEX share_grants_open ON testrack.share_grants (released);

-- At most one lease per slot (the primary key): two holders of one slot cannot be written.
CREATE TABLE testrack.share_leases (
    slot_id integer PRIMARY KEY REFERENCES testrack.share_slots (id),
    token bigint NOT NULL,
    holder_id bigint NOT NULL,
    granted double precision NOT NULL,
    expires double precision NOT NULL,
    person boolean NOT NULL,
    owner name NOT NULL DEFAULT current_user
);
CREATE INDEX share_leases_by_holder ON testrack.share_leases (holder_id, token);

CREATE TABLE testrack.share_requests (
    id bigserial PRIMARY KEY,
    holder_id bigint NOT NULL,
    priority integer NOT NULL,
    slot_ids integer[] NOT NULL,
    since double precision NOT NULL,
    owner name NOT NULL DEFAULT current_user
);

-- The time: the caller's (a test's driven clock) or else the server's, so that hosts whose
-- clocks disagree still agree on what has expired.
CREATE FUNCTION testrack.share_now(p_now double precision) RETURNS double precision
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(p_now, extract(epoch FROM clock_timestamp())::double precision)
$$;

CREATE FUNCTION testrack.share_alive(p_holder bigint, p_expires double precision, p_ttl double precision,
                                     p_now double precision) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT p_expires >= p_now AND (
        p_now - extract(epoch FROM pg_postmaster_start_time()) <= p_ttl
        OR EXISTS (
            SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND classid = 29271 AND objsubid = 2
              AND objid = (p_holder % 2147483647)::oid
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())))
$$;

-- A new holder and its advisory lock, in one statement: nobody sees the holder without its lock.
CREATE FUNCTION testrack.share_add_holder(p_run text, p_host text, p_pid integer, p_label text, p_kind text,
                                          p_priority integer, p_ttl double precision, p_now double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    v_id bigint;
BEGIN
    INSERT INTO testrack.share_holders (run, host, pid, label, kind, priority, ttl, started, expires)
    VALUES (p_run, p_host, p_pid, p_label, p_kind, p_priority, p_ttl, v_now, v_now + p_ttl)
    RETURNING id INTO v_id;
    PERFORM pg_advisory_lock(29271, (v_id % 2147483647)::integer);
    RETURN v_id;
END
$$;

-- Try a queued request: 'granted' (with the token), 'waiting', or 'gone' (the request or its
-- holder is gone; the request is dropped).
CREATE FUNCTION testrack.share_try_grant(p_request bigint, p_now double precision)
RETURNS TABLE (status text, token bigint, granted double precision, expires double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    r testrack.share_requests;
    h testrack.share_holders;
    v_token bigint;
BEGIN
    SELECT * INTO r FROM testrack.share_requests WHERE id = p_request;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    SELECT * INTO h FROM testrack.share_holders WHERE id = r.holder_id;
    IF NOT FOUND OR NOT testrack.share_alive(h.id, h.expires, h.ttl, v_now) THEN
        DELETE FROM testrack.share_requests WHERE id = p_request;
        RETURN QUERY SELECT 'gone', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    -- One decision per slot at a time: lock the slots' rows, always in the same order.
    PERFORM 1 FROM testrack.share_slots WHERE id = ANY (r.slot_ids) ORDER BY id FOR UPDATE;
    IF EXISTS (
        SELECT 1 FROM testrack.share_leases l JOIN testrack.share_holders o ON o.id = l.holder_id
        WHERE l.slot_id = ANY (r.slot_ids) AND l.expires >= v_now
          AND (o.kind = 'person' OR testrack.share_alive(o.id, o.expires, o.ttl, v_now))
    ) OR EXISTS (
        SELECT 1 FROM testrack.share_requests w JOIN testrack.share_holders o ON o.id = w.holder_id
        WHERE w.slot_ids && r.slot_ids AND w.id <> r.id
          AND (w.priority > r.priority OR (w.priority = r.priority AND w.id < r.id))
          AND testrack.share_alive(o.id, o.expires, o.ttl, v_now)
    ) THEN
        RETURN QUERY SELECT 'waiting', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    UPDATE testrack.share_grants g SET released = least(v_now, l.expires)
    FROM testrack.share_leases l
    WHERE l.slot_id = ANY (r.slot_ids) AND g.token = l.token AND g.released IS NULL;
    DELETE FROM testrack.share_leases WHERE slot_id = ANY (r.slot_ids);
    v_token := nextval('testrack.share_tokens');
    INSERT INTO testrack.share_grants (token, run, slots, granted) VALUES (v_token, h.run, cardinality(r.slot_ids), v_now);
    INSERT INTO testrack.share_leases (slot_id, token, holder_id, granted, expires, person)
    SELECT s, v_token, h.id, v_now, v_now + h.ttl, h.kind = 'person' FROM unnest(r.slot_ids) AS s;
    DELETE FROM testrack.share_requests WHERE id = p_request;
    RETURN QUERY SELECT 'granted', v_token, v_now, v_now + h.ttl;
END
$$;

-- Queue a request and try it at once: one round trip for an uncontended grant.
CREATE FUNCTION testrack.share_request(p_holder bigint, p_slots integer[], p_priority integer,
                                       p_now double precision)
RETURNS TABLE (request bigint, status text, token bigint, granted double precision, expires double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO testrack.share_requests (holder_id, priority, slot_ids, since)
    VALUES (p_holder, p_priority, p_slots, testrack.share_now(p_now))
    RETURNING id INTO v_id;
    RETURN QUERY SELECT v_id, t.status, t.token, t.granted, t.expires FROM testrack.share_try_grant(v_id, p_now) t;
END
$$;

-- The heartbeat: the tokens still held, or NULL if the holder itself is dead or gone.
CREATE FUNCTION testrack.share_renew(p_holder bigint, p_tokens bigint[], p_now double precision)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    h testrack.share_holders;
    v_kept bigint[];
BEGIN
    SELECT * INTO h FROM testrack.share_holders WHERE id = p_holder FOR UPDATE;
    IF NOT FOUND OR NOT testrack.share_alive(h.id, h.expires, h.ttl, v_now) THEN
        RETURN NULL;
    END IF;
    UPDATE testrack.share_holders SET expires = v_now + h.ttl WHERE id = p_holder;
    WITH renewed AS (
        UPDATE testrack.share_leases SET expires = v_now + h.ttl
        WHERE holder_id = p_holder AND token = ANY (p_tokens) AND expires >= v_now
        RETURNING token
    )
    SELECT coalesce(array_agg(DISTINCT token), '{}') INTO v_kept FROM renewed;
    RETURN v_kept;
END
$$;

-- Free a grant's slots and wake the waiters (the payload names the slots); false if the token
-- was no longer current, or had expired.
CREATE FUNCTION testrack.share_release(p_holder bigint, p_token bigint, p_now double precision)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    v_slots integer[];
    v_until double precision;
BEGIN
    WITH gone AS (
        DELETE FROM testrack.share_leases WHERE holder_id = p_holder AND token = p_token
        RETURNING slot_id, expires
    )
    SELECT array_agg(slot_id), min(expires) INTO v_slots, v_until FROM gone;
    IF v_slots IS NULL THEN
        RETURN false;
    END IF;
    UPDATE testrack.share_grants SET released = least(v_now, v_until) WHERE token = p_token AND released IS NULL;
    PERFORM pg_notify('testrack_share', array_to_string(v_slots, ','));
    RETURN v_until >= v_now;
END
$$;

-- A clean exit: free the holder's leases, drop its requests and the holder.
CREATE FUNCTION testrack.share_remove_holder(p_holder bigint, p_now double precision) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    v_slots integer[];
BEGIN
    UPDATE testrack.share_grants g SET released = least(v_now, l.expires)
    FROM testrack.share_leases l WHERE l.holder_id = p_holder AND g.token = l.token AND g.released IS NULL;
    WITH gone AS (DELETE FROM testrack.share_leases WHERE holder_id = p_holder RETURNING slot_id)
    SELECT array_agg(slot_id) INTO v_slots FROM gone;
    DELETE FROM testrack.share_requests WHERE holder_id = p_holder;
    DELETE FROM testrack.share_holders WHERE id = p_holder;
    PERFORM pg_notify('testrack_share', coalesce(array_to_string(v_slots, ','), ''));
END
$$;

-- Dead holders' requests go, and the holders themselves once none of their leases lives; grants
-- older than a day go too (they only feed device-time fairness).
CREATE FUNCTION testrack.share_forget_the_dead(p_now double precision) RETURNS void
LANGUAGE sql VOLATILE AS $$
    WITH dead AS (
        SELECT id FROM testrack.share_holders h
        WHERE NOT testrack.share_alive(h.id, h.expires, h.ttl, testrack.share_now(p_now))
    ), dropped AS (
        DELETE FROM testrack.share_requests WHERE holder_id IN (SELECT id FROM dead) RETURNING id
    ), old AS (
        DELETE FROM testrack.share_grants WHERE released < testrack.share_now(p_now) - 86400 RETURNING token
    )
    DELETE FROM testrack.share_holders h
    WHERE h.id IN (SELECT id FROM dead)
      AND NOT EXISTS (SELECT 1 FROM testrack.share_leases l
                      WHERE l.holder_id = h.id AND l.person AND l.expires >= testrack.share_now(p_now))
$$;
