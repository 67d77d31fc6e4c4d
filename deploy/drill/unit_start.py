"""`systemctl start` for a chroot without systemd: runs a unit's ExecStartPre= and ExecStart= lines as its User=.

    python3 unit_start.py UNIT...          (units read from /etc/systemd/system/UNIT.service)

What it applies of the unit: User=, Group= (and the user's groups), EnvironmentFile= (as systemd reads it: NAME=VALUE
lines, comments skipped, one pair of quotes removed), Environment=, WorkingDirectory=, UMask=, StateDirectory= and
RuntimeDirectory= (made, owned by the user, with their modes), and Type=notify (waits for READY=1 on NOTIFY_SOCKET,
as systemd does before it calls the start done). Everything else (ProtectSystem=, PrivateTmp=, SystemCallFilter=,
CapabilityBoundingSet=, Restart=, ...) is systemd's sandbox and supervision, which a chroot has not: printed as not
applied. Each process's output goes to /var/log/dui-drill/UNIT.log, its pid to /run/dui-drill/UNIT.pid.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

APPLIED = {"Type", "User", "Group", "EnvironmentFile", "Environment", "WorkingDirectory", "UMask", "StateDirectory",
           "StateDirectoryMode", "RuntimeDirectory", "RuntimeDirectoryMode", "ExecStartPre", "ExecStart"}


def read_unit(path: Path) -> list[tuple[str, str]]:
    """The [Service] section's assignments, in order, continuation lines joined."""
    pairs: list[tuple[str, str]] = []
    section = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def read_environment_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name.strip()] = value
    return env


def start(unit: str) -> None:
    path = Path(f"/etc/systemd/system/{unit}.service")
    pairs = read_unit(path)
    settings: dict[str, list[str]] = {}
    for key, value in pairs:
        settings.setdefault(key, []).append(value)
    one = {key: values[-1] for key, values in settings.items()}
    user = pwd.getpwnam(one.get("User", "root"))
    gid = grp.getgrnam(one["Group"]).gr_gid if "Group" in one else user.pw_gid
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": user.pw_dir, "USER": user.pw_name,
           "LOGNAME": user.pw_name, "SHELL": user.pw_shell}
    for value in settings.get("EnvironmentFile", []):
        optional = value.startswith("-")
        file = Path(value.lstrip("-"))
        if file.exists() or not optional:
            env.update(read_environment_file(file))
    for value in settings.get("Environment", []):
        for pair in shlex.split(value):
            name, _, val = pair.partition("=")
            env[name] = val
    for key, base in (("StateDirectory", "/var/lib"), ("RuntimeDirectory", "/run")):
        mode = int(one.get(key + "Mode", "0755"), 8)
        for name in " ".join(settings.get(key, [])).split():
            directory = Path(base, name)
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, user.pw_uid, gid)
            directory.chmod(mode)
    ignored = sorted({key for key, _ in pairs} - APPLIED - {"ExecReload", "KillSignal", "KillMode"})
    print(f"{unit}: User={user.pw_name}, EnvironmentFile={settings.get('EnvironmentFile')}, "
          f"WorkingDirectory={one.get('WorkingDirectory')}, UMask={one.get('UMask')}")
    print(f"{unit}: not applied (no systemd in a chroot): {', '.join(ignored)}")

    def as_user() -> None:
        os.setsid()
        os.initgroups(user.pw_name, gid)
        os.setgid(gid)
        os.setuid(user.pw_uid)
        os.umask(int(one.get("UMask", "0022"), 8))

    cwd = one.get("WorkingDirectory", user.pw_dir).lstrip("-")
    log_dir = Path("/var/log/dui-drill")
    log_dir.mkdir(exist_ok=True)
    run_dir = Path("/run/dui-drill")
    run_dir.mkdir(exist_ok=True)
    log = open(log_dir / f"{unit}.log", "ab")  # noqa: SIM115 - handed to the child
    for value in settings.get("ExecStartPre", []):
        argv = shlex.split(value.lstrip("-@+!"))
        print(f"{unit}: ExecStartPre: {shlex.join(argv)}")
        subprocess.run(argv, env=env, cwd=cwd, preexec_fn=as_user, stdout=log, stderr=log,
                       check=not value.startswith("-"))
    argv = shlex.split(one["ExecStart"].lstrip("-@+!"))
    notify = one.get("Type") == "notify"
    listener = None
    if notify:
        address = str(run_dir / f"{unit}.notify")
        if os.path.exists(address):
            os.unlink(address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(address)
        os.chmod(address, 0o666)
        env["NOTIFY_SOCKET"] = address
    print(f"{unit}: ExecStart as {user.pw_name}: {shlex.join(argv)}")
    process = subprocess.Popen(argv, env=env, cwd=cwd, preexec_fn=as_user, stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    (run_dir / f"{unit}.pid").write_text(f"{process.pid}\n")
    if listener is not None:
        listener.settimeout(1)
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                sys.exit(f"{unit}: exited with {process.returncode} before READY=1 (see {log.name})")
            if time.monotonic() > deadline:
                sys.exit(f"{unit}: no READY=1 within 120 s (see {log.name})")
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                print(f"{unit}: READY=1 received (Type=notify), pid {process.pid}")
                break
        listener.close()
    else:
        time.sleep(2)
        if process.poll() is not None:
            sys.exit(f"{unit}: exited with {process.returncode} (see {log.name})")
        print(f"{unit}: running (Type={one.get('Type', 'simple')}), pid {process.pid}")


def main(units: list[str]) -> None:
    if not units:
        sys.exit("usage: unit_start.py UNIT...")
    for unit in units:
        start(unit)


if __name__ == "__main__":
    main(sys.argv[1:])
