#!/usr/bin/env bash
# The trial's PostgreSQL, on its first start only (the postgres image runs /docker-entrypoint-initdb.d/ on an empty
# data volume): the database and the two roles of deploy/postgresql/roles.sql, with the passwords of compose.yaml.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$TRIAL_OWNER_PASSWORD" -v service_password="$TRIAL_SERVICE_PASSWORD" \
  -f /dui/postgresql/roles.sql
