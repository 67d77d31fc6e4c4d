-- What the service's role may do (docs/security.md, "Two database roles"): run as dui_owner after every
-- `dui db upgrade` (a migration may add tables), e.g.
--   psql "postgresql://dui_owner@127.0.0.1:5432/dui" -v ON_ERROR_STOP=1 -f grants.sql
-- Every table: read and write. The audit trail: read, append, and fill in the chain columns of an entry not yet
-- sealed (the seal; the database's triggers allow it once): no other UPDATE, no DELETE, no TRUNCATE. The migrations'
-- own table: read only (`/readyz` compares it with the code's head).
GRANT USAGE ON SCHEMA public TO dui_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO dui_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO dui_service;
REVOKE ALL ON audit_event, audit_event_patient FROM dui_service;
GRANT SELECT, INSERT ON audit_event, audit_event_patient TO dui_service;
GRANT UPDATE (chain_pos, prev_hash, hash, key_id) ON audit_event TO dui_service;
REVOKE ALL ON alembic_version FROM dui_service;
GRANT SELECT ON alembic_version TO dui_service;
