-- The DUI backend's database and its two roles (docs/security.md, "Two database roles"). Run once, as a superuser:
--   runuser -u postgres -- psql -v ON_ERROR_STOP=1 -v owner_password="$OWNER_PW" -v service_password="$SERVICE_PW" \
--       -f roles.sql
-- (optionally -v database=NAME, default dui). Neither role is a superuser, creates roles or databases, or bypasses
-- row security:
--   dui_owner    owns the database and every table: `dui db upgrade` (migrations) runs as it, then grants.sql.
--                Its password stays with whoever administers the database, not in the service's environment.
--   dui_service  the service (`dui serve`, `dui worker`, the other `dui` commands): reads and writes the data,
--                appends to the audit trail and seals it, nothing else (grants.sql, after every `dui db upgrade`).
\if :{?database}
\else
\set database dui
\endif

CREATE ROLE dui_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
CREATE ROLE dui_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
    PASSWORD :'service_password';

CREATE DATABASE :"database" OWNER dui_owner ENCODING 'UTF8' TEMPLATE template0;
-- Nobody else connects; the service may connect, not create schemas or temporary tables.
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO dui_service;

\connect :"database"
-- The schema the tables go in: the owner's. PUBLIC may no longer create anything in it (PostgreSQL 15 already says
-- so; older versions did not).
ALTER SCHEMA public OWNER TO dui_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO dui_service;
