#!/usr/bin/env bash
# dui-restore: restores a dump of dui-backup into a NEW database, with its owner and the service's grants.
#
#   dui-restore DUMP NEW_DATABASE [--owner ROLE] [--service ROLE]
#
# Defaults: owner dui_owner, service dui_service (deploy/postgresql/roles.sql). Run as root: the PostgreSQL tools
# then run as postgres (with PGHOST or PGUSER set, as libpq says: a superuser). Checks the dump's .sha256 when there
# is one, creates NEW_DATABASE (refused if it exists: a restore never writes over a database), restores into it with
# the tables' owners and grants as they were dumped, gives the service CONNECT (and nobody else), and refreshes the
# planner's statistics. Then check it with `dui audit verify` and `dui keys status` (deploy/README.md, "Backup and
# restore").
set -euo pipefail
# runuser lives in /usr/sbin, which cron's PATH (/usr/bin:/bin, for the lines of /etc/cron.d/dui) does not have.
PATH=$PATH:/usr/sbin:/sbin

owner=dui_owner
service=dui_service
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --owner) owner=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "dui-restore: unknown option: $1" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ ${#args[@]} -ne 2 ]; then
  echo "usage: dui-restore DUMP NEW_DATABASE [--owner ROLE] [--service ROLE]" >&2
  exit 2
fi
dump=$(realpath "${args[0]}")
database=${args[1]}

pg() {
  if [ "$(id -u)" = 0 ] && [ -z "${PGHOST:-}${PGUSER:-}" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cd /
if [ -f "$dump.sha256" ]; then
  (cd "$(dirname "$dump")" && sha256sum --check --quiet "$(basename "$dump").sha256")
fi
pg pg_restore --list < "$dump" > /dev/null

pg createdb --template=template0 --encoding=UTF8 --owner="$owner" "$database"
pg psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 -v db="$database" -v service="$service" -d "$database" <<'SQL'
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"service";
SQL
# Owners and grants as dumped (the tables belong to the owner role, the service has the rights of grants.sql); the
# audit trail's triggers are made after its rows are loaded, so the rows come back as they were.
pg pg_restore --exit-on-error --single-transaction --dbname="$database" < "$dump"
pg vacuumdb --quiet --analyze-only --dbname="$database"
echo "restored $dump into database $database"
