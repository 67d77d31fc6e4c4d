#!/usr/bin/env bash
# dui-backup: a nightly logical backup of the DUI database (pg_dump, custom format), checked and kept N days.
#
#   dui-backup [--database NAME] [--dir DIR] [--keep DAYS] [--heads FILE]
#
# Defaults: database dui, dir /var/backups/dui, keep 14 days. Run as root (from /etc/cron.d/dui): the PostgreSQL
# tools then run as postgres; with PGHOST or PGUSER set, they connect as libpq says instead. Writes
# DIR/NAME-YYYYMMDDTHHMMSSZ.dump (under a temporary name, read back with pg_restore --list, then renamed) and its
# .sha256, prints the dump's path, and removes this database's backups older than DAYS days. --heads FILE (the
# audit trail's heads, DUI_AUDIT_HEADS_FILE) is copied first, as NAME-...heads.jsonl: the heads of what the dump
# holds, which `dui audit verify --heads` checks a restored copy against (deploy/README.md, "Backup and restore").
#
# The dump holds the resources encrypted (they need the master key) and the search index in plaintext (names,
# dates of birth, INS...): keep DIR and its copies as health data. The keys (master, audit, token-signing) are never
# put here: they are kept apart.
set -euo pipefail
# runuser lives in /usr/sbin, which cron's PATH (/usr/bin:/bin, for the lines of /etc/cron.d/dui) does not have.
PATH=$PATH:/usr/sbin:/sbin

database=dui
dir=/var/backups/dui
keep=14
heads=
while [ $# -gt 0 ]; do
  case "$1" in
    --database) database=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --heads) heads=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dui-backup: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$keep" in ''|*[!0-9]*) echo "dui-backup: --keep takes a number of days" >&2; exit 2 ;; esac

# The PostgreSQL tools as postgres when root runs this without PG* settings; files are read and written by this
# shell either way, so DIR may stay root's.
pg() {
  if [ "$(id -u)" = 0 ] && [ -z "${PGHOST:-}${PGUSER:-}" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

umask 077
cd /
mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$dir/$database-$stamp.dump"
partial="$final.partial"
trap 'rm -f "$partial"' EXIT

if [ -n "$heads" ] && [ -f "$heads" ]; then
  cp "$heads" "$dir/$database-$stamp.heads.jsonl"   # before the dump: every head copied is in it
fi
pg pg_dump --format=custom --compress=6 "$database" > "$partial"
pg pg_restore --list < "$partial" > /dev/null   # a truncated or unreadable dump fails now, not on the day of a restore
mv "$partial" "$final"
(cd "$dir" && sha256sum "$(basename "$final")" > "$(basename "$final").sha256")
echo "$final"

# Retention: this database's backups older than --keep days (the one just written is kept whatever --keep says).
find "$dir" -maxdepth 1 -type f -name "$database-*" ! -name "$database-$stamp.*" -mtime +"$keep" -delete
