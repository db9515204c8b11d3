-- The lease contract for many hosts. The hot paths (request, try_grant, renew, release) are
-- functions, so each is one round trip and holds its row locks for microseconds; the rules are
-- those of testrack/share/rules.py, spelled in SQL.
--
-- Liveness: a holder is alive while its heartbeat has not run out (expires >= now) and its
-- session advisory lock (29271 = 0x7e57, holder id) is held -- the lock counts only once the
-- server has been up longer than the holder's ttl, so that holders can reconnect and take their
-- lock again after a restart.

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

-- Grants that ended (released, freed when stale, or their holder left): the device time each
-- run had, for give-back fairness. A grant still held is its rows in share_leases.
CREATE TABLE testrack.share_grants (
    token bigint PRIMARY KEY,
    run text NOT NULL,
    slots integer NOT NULL,
    granted double precision NOT NULL,
    released double precision NOT NULL
);
CREATE INDEX share_grants_by_end ON testrack.share_grants (released);

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

-- Is a holder's process gone? Its session holds the advisory lock (29271, id) exclusively while it
-- lives; if a shared, transaction-scoped try of that lock succeeds, nobody holds it. (A session's own
-- locks never conflict with it, so the holders of this session, listed in testrack.holders, are asked
-- about no further: they are the caller's own.)
CREATE FUNCTION testrack.share_process_gone(p_holder bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN p_holder::text = ANY (string_to_array(coalesce(current_setting('testrack.holders', true), ''), ','))
            THEN false
        ELSE pg_try_advisory_xact_lock_shared(29271, (p_holder % 2147483647)::integer)
    END
$$;

CREATE FUNCTION testrack.share_alive(p_holder bigint, p_expires double precision, p_ttl double precision,
                                     p_now double precision) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT CASE
        WHEN p_expires < p_now THEN false
        WHEN p_now - extract(epoch FROM pg_postmaster_start_time()) <= p_ttl THEN true
        ELSE NOT testrack.share_process_gone(p_holder)
    END
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

-- The decision, for a request queued (p_request) or not yet (NULL: it would come last among its
-- priority): grant all of p_slots now, or nothing. Returns the new token, or NULL.
CREATE FUNCTION testrack.share_decide(h testrack.share_holders, p_slots integer[], p_priority integer,
                                      p_request bigint, p_now double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_token bigint;
BEGIN
    -- One decision per slot at a time: lock the slots' rows, always in the same order.
    PERFORM 1 FROM testrack.share_slots WHERE id = ANY (p_slots) ORDER BY id FOR UPDATE;
    IF EXISTS (
        SELECT 1 FROM testrack.share_leases l JOIN testrack.share_holders o ON o.id = l.holder_id
        WHERE l.slot_id = ANY (p_slots) AND l.expires >= p_now
          AND (o.kind = 'person' OR testrack.share_alive(o.id, o.expires, o.ttl, p_now))
    ) OR EXISTS (
        SELECT 1 FROM testrack.share_requests w JOIN testrack.share_holders o ON o.id = w.holder_id
        WHERE w.slot_ids && p_slots AND w.id IS DISTINCT FROM p_request
          AND (w.priority > p_priority OR (w.priority = p_priority AND (p_request IS NULL OR w.id < p_request)))
          AND testrack.share_alive(o.id, o.expires, o.ttl, p_now)
    ) THEN
        RETURN NULL;
    END IF;
    WITH stale AS (
        DELETE FROM testrack.share_leases WHERE slot_id = ANY (p_slots) RETURNING token, holder_id, granted, expires
    )
    INSERT INTO testrack.share_grants (token, run, slots, granted, released)
    SELECT stale.token, coalesce(min(o.run), ''), count(*), min(stale.granted), least(p_now, min(stale.expires))
    FROM stale LEFT JOIN testrack.share_holders o ON o.id = stale.holder_id GROUP BY stale.token
    ON CONFLICT (token) DO NOTHING;
    v_token := nextval('testrack.share_tokens');
    INSERT INTO testrack.share_leases (slot_id, token, holder_id, granted, expires, person)
    SELECT s, v_token, h.id, p_now, p_now + h.ttl, h.kind = 'person' FROM unnest(p_slots) AS s;
    RETURN v_token;
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
    IF FOUND THEN
        SELECT * INTO h FROM testrack.share_holders WHERE id = r.holder_id;
    END IF;
    -- The requester is calling, so its process lives: only its heartbeat's expiry can make it dead.
    IF h.id IS NULL OR h.expires < v_now THEN
        DELETE FROM testrack.share_requests WHERE id = p_request;
        RETURN QUERY SELECT 'gone', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    v_token := testrack.share_decide(h, r.slot_ids, r.priority, r.id, v_now);
    IF v_token IS NULL THEN
        RETURN QUERY SELECT 'waiting', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    DELETE FROM testrack.share_requests WHERE id = p_request;
    RETURN QUERY SELECT 'granted', v_token, v_now, v_now + h.ttl;
END
$$;

-- Ask for slots: granted at once when free and nobody is ahead (one round trip, no queue row),
-- else queued ('waiting', with the request's id) or 'gone' (the holder expired).
CREATE FUNCTION testrack.share_request(p_holder bigint, p_slots integer[], p_priority integer,
                                       p_now double precision)
RETURNS TABLE (request bigint, status text, token bigint, granted double precision, expires double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    h testrack.share_holders;
    v_token bigint;
    v_id bigint;
BEGIN
    SELECT * INTO h FROM testrack.share_holders WHERE id = p_holder;
    IF NOT FOUND OR h.expires < v_now THEN
        RETURN QUERY SELECT 0::bigint, 'gone', NULL::bigint, NULL::double precision, NULL::double precision;
        RETURN;
    END IF;
    v_token := testrack.share_decide(h, p_slots, p_priority, NULL, v_now);
    IF v_token IS NOT NULL THEN
        RETURN QUERY SELECT 0::bigint, 'granted', v_token, v_now, v_now + h.ttl;
        RETURN;
    END IF;
    INSERT INTO testrack.share_requests (holder_id, priority, slot_ids, since)
    VALUES (p_holder, p_priority, p_slots, v_now)
    RETURNING id INTO v_id;
    RETURN QUERY SELECT v_id, 'waiting', NULL::bigint, NULL::double precision, NULL::double precision;
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
    v_since double precision;
    v_until double precision;
BEGIN
    WITH gone AS (
        DELETE FROM testrack.share_leases WHERE holder_id = p_holder AND token = p_token
        RETURNING slot_id, granted, expires
    )
    SELECT array_agg(slot_id), min(granted), min(expires) INTO v_slots, v_since, v_until FROM gone;
    IF v_slots IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO testrack.share_grants (token, run, slots, granted, released)
    SELECT p_token, run, cardinality(v_slots), v_since, least(v_now, v_until)
    FROM testrack.share_holders WHERE id = p_holder
    ON CONFLICT (token) DO NOTHING;
    -- Wake waiters, if there are any (a NOTIFY serialises commits). A release need not wait for
    -- the disk: if a crash lost it, the lease would only expire later, never be held twice.
    IF EXISTS (SELECT 1 FROM testrack.share_requests WHERE slot_ids && v_slots) THEN
        PERFORM pg_notify('testrack_share', array_to_string(v_slots, ','));
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
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
    WITH gone AS (
        DELETE FROM testrack.share_leases WHERE holder_id = p_holder RETURNING slot_id, token, granted, expires
    ), ended AS (
        INSERT INTO testrack.share_grants (token, run, slots, granted, released)
        SELECT gone.token, coalesce(min(h.run), ''), count(*), min(gone.granted), least(v_now, min(gone.expires))
        FROM gone LEFT JOIN testrack.share_holders h ON h.id = p_holder GROUP BY gone.token
        ON CONFLICT (token) DO NOTHING
    )
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
