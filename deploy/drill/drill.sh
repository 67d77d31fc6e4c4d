#!/usr/bin/env bash
# The deployment drill: deploy/README.md followed step by step in a fresh Debian 12 chroot, then checked from outside.
#
#   deploy/drill/drill.sh [LOG]          (as root, on a Debian host; LOG defaults to /var/tmp/dui-drill.log)
#
# 1. debootstrap --variant=minbase bookworm into a new directory, from the mirror the host's apt uses (DRILL_MIRROR
#    to override); /proc, /sys and /dev bind-mounted; the release put in /opt/dui/src from `git archive HEAD`.
# 2. Inside: the README's commands (deploy/drill/readme_steps.py makes the script from the README itself; it lists
#    every change it makes: ports, and the steps that need systemd or an operator).
# 3. From outside: /fhir/metadata, 401 without a token, a partner's client certificate and token through nginx,
#    no certificate refused, `dui audit verify`.
# 4. Teardown on any exit (trap): processes whose root is the chroot stopped, mounts undone, the chroot removed.
#
# Ports (the chroot shares the host's network): DRILL_PG_PORT, DRILL_WEB_PORT, DRILL_HTTPS_PORT, DRILL_HTTP_PORT,
# each a free port found on 127.0.0.1 by default. DRILL_KEEP=1 keeps the chroot (processes stopped, unmounted).
# The log, cut for deploy/drill/last-run.log (apt's and pip's output counted, secrets refused):
#   python3 deploy/drill/trim_log.py LOG > deploy/drill/last-run.log
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
log=${1:-/var/tmp/dui-drill.log}
[ "$(id -u)" = 0 ] || { echo "drill: run as root" >&2; exit 2; }
command -v debootstrap > /dev/null || { echo "drill: debootstrap missing: apt-get install -y debootstrap" >&2; exit 2; }

exec > >(tee "$log") 2>&1
t0=$SECONDS
say() { printf "\n[%s] %s\n" "$(date -u +%T)" "$*"; }
run() { printf "  $ %s\n" "$*"; "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PG_PORT=${DRILL_PG_PORT:-$(free_port)}
WEB_PORT=${DRILL_WEB_PORT:-$(free_port)}
HTTPS_PORT=${DRILL_HTTPS_PORT:-$(free_port)}
HTTP_PORT=${DRILL_HTTP_PORT:-$(free_port)}
HOST=dui.example-ehpad.fr
mirror=${DRILL_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources \
  2>/dev/null | head -1)}
mirror=${mirror:-$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
[ -n "$mirror" ] || { echo "drill: no Debian mirror found in /etc/apt: set DRILL_MIRROR" >&2; exit 2; }

root=$(mktemp -d /var/tmp/dui-drill-root.XXXXXX)
chmod 0755 "$root"  # mktemp's 0700 would keep postgres, _apt and dui out of the chroot's /
pki=$(mktemp -d /var/tmp/dui-drill-pki.XXXXXX)
mounted=()

teardown() {
  local rc=$?
  set +e
  say "teardown (exit status so far: $rc)"
  local pids=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    echo "  stopping the chroot's processes: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null
    for _ in $(seq 30); do
      local left=()
      for p in "${pids[@]}"; do [ -d "/proc/$p" ] && left+=("$p"); done
      [ ${#left[@]} -eq 0 ] && break
      sleep 1
    done
    for p in "${pids[@]}"; do [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null; done
  fi
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[$i]}" || umount -l "${mounted[$i]}"
  done
  if grep -q " $root/" /proc/mounts; then
    echo "drill: mounts left under $root: not removed" >&2
  elif [ "${DRILL_KEEP:-0}" = 1 ]; then
    echo "  chroot kept: $root"
  else
    rm -rf --one-file-system "$root"
  fi
  rm -rf "$pki"
  say "drill ended with status $rc after $((SECONDS - t0)) s"
}
trap teardown EXIT

say "drill of deploy/README.md at $(git -C "$repo" rev-parse --short HEAD), $(date -u +%F)"
echo "  chroot $root; mirror $mirror; ports: PostgreSQL $PG_PORT, dui serve $WEB_PORT, nginx https $HTTPS_PORT," \
  "http $HTTP_PORT"

say "1. debootstrap (minbase, bookworm)"
s=$SECONDS
debootstrap --variant=minbase bookworm "$root" "$mirror" > /var/tmp/dui-drill-debootstrap.log 2>&1 \
  || { tail -20 /var/tmp/dui-drill-debootstrap.log; echo "drill: debootstrap failed" >&2; exit 1; }
echo "  -> ok ($((SECONDS - s)) s)"
for fs in proc sys dev dev/pts; do
  run mount --bind "/$fs" "$root/$fs"
  mounted+=("$root/$fs")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No service starts from a package's installation (no systemd, and nginx would take the host's port 80): the
# drill starts them itself, on its ports.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

say "the release: git archive HEAD -> /opt/dui/src"
mkdir -p "$root/opt/dui/src" "$root/root/drill/pki"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/opt/dui/src"
python3 "$here/readme_steps.py" script > "$root/root/drill/readme.sh"
cp "$here/unit_start.py" "$here/cron_run.sh" "$root/root/drill/"
# A host whose HTTPS goes through an inspecting proxy trusts its CA through PIP_CERT (or pip.conf's cert=): the
# chroot's pip is given the same bundle, as an operator's site would configure its own hosts. Not a README step.
pip_cert=${PIP_CERT:-$(sed -n 's/^cert *= *//p' /etc/pip.conf 2>/dev/null | head -1)}
chroot_env=()
if [ -n "$pip_cert" ] && [ -f "$pip_cert" ]; then
  cp "$pip_cert" "$root/root/drill/pip-ca.crt"
  chroot_env+=(PIP_CERT=/root/drill/pip-ca.crt)
  echo "  the host's pip CA bundle ($pip_cert) given to the chroot's pip as PIP_CERT"
fi

say "test PKI (openssl): a server CA and its certificate for $HOST; a partner CA (stands for IGC-Santé) and a" \
  "partner's client certificate; a stranger CA and its client certificate"
(
  cd "$pki"
  ca() {  # name subject
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$2" \
      -keyout "$1-ca.key" -out "$1-ca.pem" -addext basicConstraints=critical,CA:TRUE 2> /dev/null
  }
  leaf() {  # name ca subject extension
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" -keyout "$1.key" -out "$1.csr" \
      2> /dev/null
    printf '%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2-ca.pem" -CAkey "$2-ca.key" -CAcreateserial -days 2 -extfile "$1.ext" \
      -out "$1.pem" 2> /dev/null
  }
  ca server "Drill server CA"
  leaf server server "$HOST" "subjectAltName=DNS:$HOST
extendedKeyUsage=serverAuth"
  cat server.pem server-ca.pem > server-chain.pem
  ca partner "Drill partner CA (test IGC-Sante)"
  leaf partner partner "Drill partner system" "extendedKeyUsage=clientAuth"
  ca stranger "Drill unknown CA"
  leaf stranger stranger "Drill stranger" "extendedKeyUsage=clientAuth"
)
install -m 0600 "$pki/server-chain.pem" "$pki/server.key" "$pki/partner-ca.pem" "$root/root/drill/pki/"
echo "  -> ok"

say "2. deploy/README.md inside the chroot (script made from the README by readme_steps.py)"
s=$SECONDS
chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive PG_PORT="$PG_PORT" WEB_PORT="$WEB_PORT" HTTPS_PORT="$HTTPS_PORT" \
  HTTP_PORT="$HTTP_PORT" "${chroot_env[@]}" /bin/bash /root/drill/readme.sh
echo "  -> README steps ok ($((SECONDS - s)) s)"

say "3. checks from outside the chroot (curl on the host, through nginx on 127.0.0.1:$HTTPS_PORT)"
base=https://$HOST:$HTTPS_PORT
tls=(--silent --output /dev/null --write-out '%{http_code}' --resolve "$HOST:$HTTPS_PORT:127.0.0.1"
     --cacert "$pki/server-ca.pem")
partner=(--cert "$pki/partner.pem" --key "$pki/partner.key")
failures=0
expect() {  # what status [curl arguments...]
  local what=$1 want=$2 got
  shift 2
  got=$(curl "${tls[@]}" "$@" || true)
  if [ "$got" = "$want" ]; then echo "  ok   $what: $got"; else echo "  FAIL $what: $got, expected $want"; failures=$((failures + 1)); fi
}
expect "http redirects to https" 301 "http://127.0.0.1:$HTTP_PORT/fhir/metadata"
expect "GET /fhir/metadata, partner certificate" 200 "${partner[@]}" "$base/fhir/metadata"
expect "GET /fhir/metadata, no client certificate" 403 "$base/fhir/metadata"
expect "GET /fhir/Patient, no client certificate" 403 "$base/fhir/Patient"
expect "GET /fhir/Patient, certificate of an unknown CA" 400 --cert "$pki/stranger.pem" --key "$pki/stranger.key" \
  "$base/fhir/Patient"
expect "GET /fhir/Patient, partner certificate, no token" 401 "${partner[@]}" "$base/fhir/Patient"
expect "GET /.well-known/smart-configuration (staff path), no certificate" 200 "$base/.well-known/smart-configuration"
expect "TLS 1.1 refused" 000 --tlsv1.1 --tls-max 1.1 "$base/.well-known/smart-configuration"

cid=$(cat "$root/root/drill/client-id")
assertion=$(chroot "$root" /opt/dui/venv/bin/python /opt/dui/src/scripts/client_assertion.py assertion \
  /root/drill/partner-key.pem --client-id "$cid" --token-url "https://$HOST/auth/token")
token=$(curl --silent --resolve "$HOST:$HTTPS_PORT:127.0.0.1" --cacert "$pki/server-ca.pem" \
  "$base/auth/token" -d grant_type=client_credentials -d scope=system/Patient.rs \
  -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion="$assertion" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("access_token", ""))' || true)
if [ -n "$token" ]; then echo "  ok   partner token (SMART Backend Services, private_key_jwt) through nginx";
else echo "  FAIL partner token: none"; failures=$((failures + 1)); fi
expect "GET /fhir/Patient, partner certificate and token" 200 "${partner[@]}" -H "Authorization: Bearer $token" \
  "$base/fhir/Patient?_count=1"
expect "GET /fhir/Patient, token but no client certificate" 403 -H "Authorization: Bearer $token" \
  "$base/fhir/Patient?_count=1"
unset token assertion

# With cron's PATH and /usr/local/sbin: dui-admin finds runuser (in /usr/sbin) by itself.
verify=$(chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/bin:/bin LANG=C.UTF-8 \
  /usr/local/sbin/dui-admin audit verify 2>&1) && echo "  ok   dui-admin audit verify: ${verify##*$'\n'}" \
  || { echo "  FAIL dui-admin audit verify: $verify"; failures=$((failures + 1)); }
grep -c . "$root/var/log/nginx/dui.access.log" | sed 's/^/  nginx access log lines: /'

[ "$failures" = 0 ] || { echo "drill: $failures check(s) failed" >&2; exit 1; }
say "all checks passed; $((SECONDS - t0)) s since the start"
