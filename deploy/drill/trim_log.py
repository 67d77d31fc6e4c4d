"""A drill log cut to the essential, for deploy/drill/last-run.log: what apt and pip print is counted, not kept.

    python3 trim_log.py FULL_LOG > deploy/drill/last-run.log

Refuses (exit 1) a log in which something looks like a secret: 48 hexadecimal digits (a database password
of section 3), a URL with a password, a bearer token or a private key.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NOISY = ("step 1: apt-get update", "step 2: apt-get install", "step 5: /opt/dui/venv/bin/pip",
         "step 6: /opt/dui/venv/bin/pip")
KEPT_IN_NOISY = re.compile(r"^(  \$ |  -> |  \(drill|Successfully installed|E: |ERROR|FAILED)")
SECRET = re.compile(r"\b[0-9a-f]{48}\b|://[^/\s:$]+:[^@/\s$]+@|Bearer [A-Za-z0-9._-]{20,}|PRIVATE KEY")


def trim(text: str) -> str:
    out: list[str] = []
    noisy = False
    skipped = 0

    def flush() -> None:
        nonlocal skipped
        if skipped:
            out.append(f"  ({skipped} lines of apt or pip output left out)")
            skipped = 0

    for line in text.splitlines():
        if line.startswith("["):
            flush()
            noisy = any(marker in line for marker in NOISY)
            out.append(line)
        elif noisy and line and not KEPT_IN_NOISY.match(line):
            skipped += 1
        else:
            if line.startswith("Successfully installed"):
                line = f"Successfully installed {len(line.split()) - 2} packages"
            flush()
            out.append(line)
    flush()
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: trim_log.py FULL_LOG", file=sys.stderr)
        return 2
    trimmed = trim(Path(argv[1]).read_text())
    found = SECRET.search(trimmed)
    if found:
        print(f"trim_log: something like a secret in the log: {found.group(0)[:12]}...", file=sys.stderr)
        return 1
    sys.stdout.write(trimmed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
