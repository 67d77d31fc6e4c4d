#!/bin/bash
# Runs each command of a cron.d file once, as cron would: through /bin/sh, in cron's environment (PATH=/usr/bin:/bin,
# HOME, LOGNAME, SHELL) plus the file's own NAME=VALUE lines. Root's lines only (the drill's file has no other).
#
#   cron_run.sh /etc/cron.d/dui
set -euo pipefail

file=$1
env=(PATH=/usr/bin:/bin HOME=/root LOGNAME=root SHELL=/bin/sh)
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  if [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then env+=("$line"); continue; fi
  read -r _ _ _ _ _ user command <<< "$line"
  [ "$user" = root ] || { echo "cron_run: $file: a line for $user, not root" >&2; exit 2; }
  echo "cron (as root, PATH=/usr/bin:/bin): $command"
  env -i "${env[@]}" /bin/sh -c "$command"
done < "$file"
