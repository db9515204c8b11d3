-- Holders stay in their lane: a database role changes only its own leases, holders and requests
-- (current_user when they were made), unless it is an admin of the share (a member of the role
-- that owns the schema testrack) or the row is stale (expired, or its run's holder is dead).
-- So a CI runner cannot release a person's reservation, while anyone may take over a dead run's
-- slot. Fencing still guards every write of a holder; this guards the rows themselves. The table
-- owner (the admin who migrated) is not subject to these policies.

CREATE FUNCTION testrack.share_is_admin() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'testrack'), 'MEMBER')
$$;

CREATE FUNCTION testrack.share_holder_dead(p_holder bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT NOT EXISTS (
        SELECT 1 FROM testrack.share_holders h
        WHERE h.id = p_holder AND testrack.share_alive(h.id, h.expires, h.ttl, testrack.share_now(NULL)))
$$;

ALTER TABLE testrack.share_leases ENABLE ROW LEVEL SECURITY;
CREATE POLICY leases_read ON testrack.share_leases FOR SELECT USING (true);
CREATE POLICY leases_take ON testrack.share_leases FOR INSERT WITH CHECK (owner = current_user);
CREATE POLICY leases_renew ON testrack.share_leases FOR UPDATE
    USING (owner = current_user OR testrack.share_is_admin());
CREATE POLICY leases_free ON testrack.share_leases FOR DELETE
    USING (owner = current_user OR testrack.share_is_admin() OR expires < testrack.share_now(NULL)
           OR (NOT person AND testrack.share_holder_dead(holder_id)));

ALTER TABLE testrack.share_holders ENABLE ROW LEVEL SECURITY;
CREATE POLICY holders_read ON testrack.share_holders FOR SELECT USING (true);
CREATE POLICY holders_join ON testrack.share_holders FOR INSERT WITH CHECK (owner = current_user);
CREATE POLICY holders_renew ON testrack.share_holders FOR UPDATE
    USING (owner = current_user OR testrack.share_is_admin());
CREATE POLICY holders_forget ON testrack.share_holders FOR DELETE
    USING (owner = current_user OR testrack.share_is_admin()
           OR NOT testrack.share_alive(id, expires, ttl, testrack.share_now(NULL)));

ALTER TABLE testrack.share_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY requests_read ON testrack.share_requests FOR SELECT USING (true);
CREATE POLICY requests_queue ON testrack.share_requests FOR INSERT WITH CHECK (owner = current_user);
CREATE POLICY requests_drop ON testrack.share_requests FOR DELETE
    USING (owner = current_user OR testrack.share_is_admin() OR testrack.share_holder_dead(holder_id));
