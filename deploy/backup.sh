#!/usr/bin/env bash
# dui-backup: a nightly logical backup of the DUI database (pg_dump, custom format), checked and kept N days.
#
#   dui-backup [--database NAME] [--dir DIR] [--keep DAYS]
#
# Defaults: database dui, dir /var/backups/dui, keep 14 days. Connects as libpq does (PGHOST, PGPORT, PGUSER or the
# account running it: run it as postgres, e.g. from /etc/cron.d/dui-backup). Writes DIR/dui-YYYYMMDDTHHMMSSZ.dump
# (written under a temporary name, read back with pg_restore --list, then renamed) and its .sha256, prints the
# dump's path, and removes the dumps of that database older than DAYS days. Exit status: 0, or pg_dump's failure.
#
# The dump holds the resources encrypted (they need the master key) and the search index in plaintext (names,
# dates of birth, INS...): keep DIR and its copies as health data. The keys (master, audit, token-signing) are
# never put here: they are backed up apart (deploy/README.md, "Backup and restore").
set -euo pipefail

database=dui
dir=/var/backups/dui
keep=14
while [ $# -gt 0 ]; do
  case "$1" in
    --database) database=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dui-backup: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$keep" in ''|*[!0-9]*) echo "dui-backup: --keep takes a number of days" >&2; exit 2 ;; esac

umask 077
mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
final="$dir/$database-$stamp.dump"
partial="$final.partial"
trap 'rm -f "$partial"' EXIT

pg_dump --format=custom --compress=6 --file="$partial" "$database"
pg_restore --list "$partial" > /dev/null   # a truncated or unreadable dump fails here, not on the day of a restore
mv "$partial" "$final"
(cd "$dir" && sha256sum "$(basename "$final")" > "$(basename "$final").sha256")
echo "$final"

# Retention: this database's dumps older than --keep days (the newest is always kept: it was just written).
find "$dir" -maxdepth 1 -type f \( -name "$database-*.dump" -o -name "$database-*.dump.sha256" \) \
  -mtime +"$keep" -delete
