-- One run over many hosts: the run, its tests, the hosts that joined, which of their devices can
-- run which test (routing stays in the hosts), and the queue of work items.
--
-- load mode: one item per test (device NULL: any device with a route). each mode: one item per
-- (test, device) for every route a host registers. A claim and a result each check the lease's
-- token in their own transaction; the result row goes to testrack.results in that transaction.

CREATE TABLE testrack.queue_runs (
    uid text PRIMARY KEY,
    mode text NOT NULL CHECK (mode IN ('load', 'each')),
    digest text NOT NULL,
    test_count integer NOT NULL,
    retry_budget integer NOT NULL,
    store_run_id bigint NOT NULL,
    created double precision NOT NULL,
    finished double precision
);

CREATE TABLE testrack.queue_tests (
    run text NOT NULL REFERENCES testrack.queue_runs (uid),
    idx integer NOT NULL,
    nodeid text NOT NULL,
    estimate double precision NOT NULL,
    PRIMARY KEY (run, idx)
);

CREATE TABLE testrack.queue_hosts (
    run text NOT NULL REFERENCES testrack.queue_runs (uid),
    name text NOT NULL,
    holder_id bigint NOT NULL,
    joined double precision NOT NULL,
    left_at double precision,
    PRIMARY KEY (run, name)
);

CREATE TABLE testrack.queue_routes (
    run text NOT NULL,
    device text NOT NULL,
    idx integer NOT NULL,
    host text NOT NULL,
    PRIMARY KEY (run, device, idx)
);
CREATE INDEX queue_routes_by_test ON testrack.queue_routes (run, idx);

CREATE TABLE testrack.queue_items (
    id bigserial PRIMARY KEY,
    run text NOT NULL REFERENCES testrack.queue_runs (uid),
    idx integer NOT NULL,
    device text,
    estimate double precision NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'claimed', 'done')),
    attempts integer NOT NULL DEFAULT 0,
    started boolean NOT NULL DEFAULT false,
    claim_holder bigint,
    claim_host text,
    claim_device text,
    claim_token bigint,
    claim_batch text,
    outcome text
);
CREATE UNIQUE INDEX queue_items_once ON testrack.queue_items (run, idx, coalesce(device, ''));
CREATE INDEX queue_items_queued ON testrack.queue_items (run, estimate DESC, id) WHERE state = 'queued';
CREATE INDEX queue_items_claimed ON testrack.queue_items (claim_token) WHERE state = 'claimed';
CREATE INDEX queue_items_batch ON testrack.queue_items (claim_batch) WHERE state = 'claimed';

-- Claim up to p_n queued tests p_device can run, longest first, skipping those another host is
-- claiming right now. Each candidate's route is one primary-key lookup, so the cost does not
-- depend on the planner's view of a queue that was filled a moment ago.
CREATE FUNCTION testrack.queue_claim(p_run text, p_device text, p_n integer, p_holder bigint, p_host text,
                                     p_token bigint, p_batch text)
RETURNS TABLE (item bigint, nodeid text, attempts integer)
LANGUAGE plpgsql AS $$
DECLARE
    it record;
    v_taken integer := 0;
BEGIN
    FOR it IN
        SELECT i.id, i.idx FROM testrack.queue_items i
        WHERE i.run = p_run AND i.state = 'queued' AND (i.device IS NULL OR i.device = p_device)
        ORDER BY i.estimate DESC, i.id
    LOOP
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM testrack.queue_routes r WHERE r.run = p_run AND r.device = p_device AND r.idx = it.idx);
        RETURN QUERY
        UPDATE testrack.queue_items i
        SET state = 'claimed', attempts = i.attempts + 1, started = false, claim_holder = p_holder,
            claim_host = p_host, claim_device = p_device, claim_token = p_token, claim_batch = p_batch
        FROM testrack.queue_tests t
        WHERE i.id = (SELECT q.id FROM testrack.queue_items q WHERE q.id = it.id AND q.state = 'queued'
                      FOR UPDATE SKIP LOCKED)
          AND t.run = i.run AND t.idx = i.idx
        RETURNING i.id, t.nodeid, i.attempts;
        IF FOUND THEN
            v_taken := v_taken + 1;
            EXIT WHEN v_taken >= p_n;
        END IF;
    END LOOP;
END
$$;

-- Claimed items whose lease is gone go back to the queue. A test that had started on a host that
-- died counts as an attempt: beyond the run's retry budget its final result is 'crashed' (written
-- to testrack.results, naming the host); one that had not started, or whose holder lives on
-- (its lease was lost, not its host), is queued again without charge.
CREATE FUNCTION testrack.queue_recover(p_run text, p_now double precision)
RETURNS TABLE (item bigint, nodeid text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := testrack.share_now(p_now);
    v_budget integer;
    v_store bigint;
    it record;
    v_dead boolean;
BEGIN
    SELECT retry_budget, store_run_id INTO v_budget, v_store FROM testrack.queue_runs WHERE uid = p_run;
    FOR it IN
        SELECT i.id, i.attempts, i.started, i.claim_holder, i.claim_host, i.claim_device, t.nodeid AS test
        FROM testrack.queue_items i JOIN testrack.queue_tests t ON t.run = i.run AND t.idx = i.idx
        WHERE i.run = p_run AND i.state = 'claimed'
          AND NOT EXISTS (
              SELECT 1 FROM testrack.share_leases l JOIN testrack.share_holders h ON h.id = l.holder_id
              WHERE l.token = i.claim_token AND l.expires >= v_now
                AND testrack.share_alive(h.id, h.expires, h.ttl, v_now))
        FOR UPDATE OF i SKIP LOCKED
    LOOP
        SELECT NOT coalesce(bool_or(testrack.share_alive(h.id, h.expires, h.ttl, v_now)), false) INTO v_dead
        FROM testrack.share_holders h WHERE h.id = it.claim_holder;
        IF it.started AND v_dead AND it.attempts > v_budget THEN
            UPDATE testrack.queue_items SET state = 'done', outcome = 'crashed' WHERE id = it.id;
            INSERT INTO testrack.results (run_id, nodeid, device, worker, outcome, duration, started, stopped, message)
            VALUES (v_store, it.test, it.claim_device, it.claim_host, 'crashed', 0, v_now, v_now,
                    format('host %s stopped (no heartbeat, or its connection closed) while running it on %s '
                           '(attempt %s of %s; --rack-retry-crashed allows more)',
                           it.claim_host, it.claim_device, it.attempts, v_budget + 1));
            RETURN QUERY SELECT it.id, it.test, 'crashed'::text;
        ELSE
            UPDATE testrack.queue_items
            SET state = 'queued', started = false, claim_holder = NULL, claim_host = NULL, claim_device = NULL,
                claim_token = NULL, claim_batch = NULL, attempts = CASE WHEN it.started AND v_dead THEN attempts ELSE attempts - 1 END
            WHERE id = it.id;
            RETURN QUERY SELECT it.id, it.test, 'queued'::text;
        END IF;
    END LOOP;
END
$$;
