"""The commands of deploy/README.md that the drill runs, read from the README itself, and the script that runs them.

    python3 readme_steps.py list      the steps, one a paragraph: README command, then what the drill runs
    python3 readme_steps.py script    the bash script run inside the chroot (deploy/drill/drill.sh)

Which blocks: every ```sh block of sections 1 to 7, and the first of section 8 (the restore). Sections 9 (upgrade,
rollback) and the second block of section 8 (putting a restored database in service) are not part of a first
install. Each logical command (continuation lines and here-documents joined) is run as written, with two kinds of
change, both listed here and printed in the log:

- PORTS: the chroot shares the host's network, where 5432, 8080, 80 and 443 may be taken: 127.0.0.1:5432 and
  127.0.0.1:8080 in a command become the drill's ports ($PG_PORT, $WEB_PORT), and hooks after some commands move
  the files' ports (postgresql.conf, the dui-web unit's --port, the nginx site's listen and proxy_pass).
- ADAPTED: a command that needs systemd or an operator's hands is replaced, each with its reason.

HOOKS add drill commands before or after a README command (the certificates an operator copies, the partner's
key set, a backup as cron would run it). tests/deploy/test_drill.py checks that every key below is a command the
README still has, so the drill and the README cannot drift apart silently.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

PORTS = {"127.0.0.1:5432": "127.0.0.1:$PG_PORT", "127.0.0.1:8080": "127.0.0.1:$WEB_PORT"}

# README command -> (what the drill runs instead, why)
ADAPTED: dict[str, tuple[str, str]] = {
    "systemctl daemon-reload": (
        ": daemon-reload", "no systemd in a chroot: nothing to reload"),
    "systemctl enable --now dui-web dui-worker": (
        "python3 /root/drill/unit_start.py dui-web dui-worker",
        "no systemd: each unit's ExecStartPre/ExecStart run as its User= with its EnvironmentFile=/Environment=, "
        "WorkingDirectory=, UMask=, State/RuntimeDirectory=; READY=1 awaited for Type=notify (unit_start.py)"),
    "nginx -t && systemctl reload nginx": (
        "nginx -t && nginx", "no systemd: nginx started directly (its package did not start it: policy-rc.d)"),
    "dui-admin users create admin.local --role administratif --establishment 690001425   "
    "# a local account (asks a password)": (
        'printf "%s\\n" "$ADMIN_PW" | dui-admin users create admin.local --role administratif '
        "--establishment 690001425 --password-stdin",
        "no terminal to ask the password: the same command with --password-stdin"),
    'dui-admin clients create "Hôpital partenaire" --scope "system/Patient.rs" '
    "--jwks-file /var/lib/dui/partner.jwks.json --establishment 690001425": (
        'CID=$(dui-admin clients create "Hôpital partenaire" --scope "system/Patient.rs" '
        "--jwks-file /var/lib/dui/partner.jwks.json --establishment 690001425) && echo \"$CID\" "
        "| tee /root/drill/client-id",
        "the client_id it prints is kept for the partner's token request from outside"),
}

# README command -> drill commands run before it / after it
BEFORE: dict[str, list[str]] = {
    "cp /opt/dui/src/deploy/systemd/dui-web.service /opt/dui/src/deploy/systemd/dui-worker.service "
    "/etc/systemd/system/": [
        "install -d /etc/systemd/system  # a host booted with systemd has it; a minbase chroot has no systemd",
    ],
    "python3 -m venv /opt/dui/venv": [
        "test -f /opt/dui/src/pyproject.toml  # the release, put in /opt/dui/src by drill.sh (git archive)",
    ],
    "dui-admin users create admin.local --role administratif --establishment 690001425   "
    "# a local account (asks a password)": [
        'ADMIN_PW="Drill-$(openssl rand -hex 12)"  # the password the operator would type',
    ],
    "install -m 0600 -o dui -g dui partner.jwks.json /var/lib/dui/partner.jwks.json     "
    "# the public keys a partner sent you": [
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out /root/drill/partner-key.pem"
        "  # the partner's side (README, 'Get a token')",
        "/opt/dui/venv/bin/python /opt/dui/src/scripts/client_assertion.py jwks /root/drill/partner-key.pem"
        " > partner.jwks.json",
    ],
}
AFTER: dict[str, list[str]] = {
    "apt-get install -y python3 python3-venv postgresql nginx-light openssl curl": [
        'sed -i "s/^#\\?port = .*/port = $PG_PORT/" /etc/postgresql/15/main/postgresql.conf  # PORTS',
        "pg_ctlcluster 15 main start  # no systemd: the cluster the package made",
    ],
    "cp /opt/dui/src/deploy/systemd/dui-web.service /opt/dui/src/deploy/systemd/dui-worker.service "
    "/etc/systemd/system/": [
        'sed -i "s/--port 8080 /--port $WEB_PORT /" /etc/systemd/system/dui-web.service  # PORTS',
    ],
    'sed -i "s/dui.example-ehpad.fr/$DUI_HOST/g" /etc/nginx/sites-available/dui': [
        'sed -i -E -e "s/listen (\\[::\\]:)?443 /listen \\1$HTTPS_PORT /" -e "s/listen (\\[::\\]:)?80;/listen '
        '\\1$HTTP_PORT;/" -e "s/127.0.0.1:8080/127.0.0.1:$WEB_PORT/" /etc/nginx/sites-available/dui  # PORTS',
    ],
    "install -d -m 0750 /etc/nginx/tls": [
        "install -m 0644 /root/drill/pki/server-chain.pem /etc/nginx/tls/dui.crt  # the operator's copy",
        "install -m 0600 /root/drill/pki/server.key /etc/nginx/tls/dui.key",
        "install -m 0644 /root/drill/pki/partner-ca.pem /etc/nginx/tls/igc-sante-ca.pem",
    ],
    "curl -s http://127.0.0.1:8080/readyz": [
        'curl -fsS "http://127.0.0.1:$WEB_PORT/readyz" > /dev/null  # and it must answer 200',
    ],
    "install -d -m 0700 /var/backups/dui": [
        "dui-admin audit seal  # as the worker does every minute: the heads file has the trail's head",
        "bash /root/drill/cron_run.sh /etc/cron.d/dui  # each line run once, as cron would (its PATH, sh -c)",
    ],
    'DUI_DATABASE_URL="$RESTORED_URL" dui-admin keys status': [
        "if DUI_DATABASE_URL=\"$RESTORED_URL\" dui-admin keys status | grep UNUSABLE; then false; fi"
        "  # README: no UNUSABLE key",
        "runuser -u postgres -- dropdb dui_restored  # the drill's end (section 8, prose)",
        "rm /var/lib/dui/heads-of-dump.jsonl /var/lib/dui/restored-heads.jsonl",
    ],
}


@dataclass
class Step:
    section: str
    command: str  # as the README has it
    run: list[str] = field(default_factory=list)  # what the drill runs for it, hooks included
    note: str = ""


def _logical_commands(block: str) -> list[str]:
    commands: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = line
        while text.endswith("\\") and i < len(lines):
            text += "\n" + lines[i]
            i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", text)
        if heredoc:
            while i < len(lines):
                text += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
        commands.append(text)
    return commands


def readme_blocks(readme: Path = README) -> list[tuple[str, str]]:
    """(section title, block) for the blocks the drill runs, in the README's order."""
    chosen: list[tuple[str, str]] = []
    for part in re.split(r"^## ", readme.read_text(), flags=re.M)[1:]:
        title = part.splitlines()[0]
        number = title.split(".", 1)[0]
        blocks = re.findall(r"^```sh\n(.*?)^```", part, flags=re.M | re.S)
        if number in {"1", "2", "3", "4", "5", "6", "7"}:
            chosen += [(title, b) for b in blocks]
        elif number == "8":
            chosen.append((title, blocks[0]))
    return chosen


def steps(readme: Path = README) -> list[Step]:
    result = []
    for title, block in readme_blocks(readme):
        for command in _logical_commands(block):
            step = Step(title, command)
            step.run += BEFORE.get(command, [])
            if command in ADAPTED:
                replacement, step.note = ADAPTED[command]
                step.run.append(replacement)
            else:
                ported = command
                for old, new in PORTS.items():
                    ported = ported.replace(old, new)
                if ported != command:
                    step.note = "PORTS: " + ", ".join(f"{o} -> {n}" for o, n in PORTS.items() if o in command)
                step.run.append(ported)
            step.run += AFTER.get(command, [])
            result.append(step)
    return result


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def script(readme: Path = README) -> str:
    out = [
        "#!/bin/bash",
        "# Generated by deploy/drill/readme_steps.py from deploy/README.md: do not edit.",
        "set -euo pipefail",
        "cd /root",
        'STEP=0; t0=$SECONDS',
        'trap \'echo "FAILED: step $STEP, exit $?, after $((SECONDS - t0)) s" >&2\' ERR',
        'say() { printf "\\n[%s] %s\\n" "$(date -u +%T)" "$*"; }',
        'cmd() { printf "  $ %s\\n" "$1"; }',
        'ok() { printf "  -> ok (step %s, %s s so far)\\n" "$STEP" "$((SECONDS - t0))"; }',
    ]
    current = None
    for n, step in enumerate(steps(readme), 1):
        if step.section != current:
            current = step.section
            out.append(f"say {_quote('## ' + current)}")
        out.append(f"STEP={n}; say {_quote(f'step {n}: ' + step.command)}")
        if step.note:
            out.append(f"echo {_quote('  (drill: ' + step.note + ')')}")
        for line in step.run:
            out.append(f"cmd {_quote(line)}")
            out.append(line)
        out.append("ok")
    out.append('say "README steps done in $((SECONDS - t0)) s"')
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["script"]:
        sys.stdout.write(script())
    elif argv[1:] == ["list"]:
        for n, step in enumerate(steps(), 1):
            print(f"{n:2} [{step.section}] {step.command}")
            if step.run != [step.command]:
                for line in step.run:
                    print(f"     drill: {line}")
    else:
        print("usage: readme_steps.py list|script", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
