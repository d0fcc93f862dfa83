"""App processes difyops started: pid files, supervision (psutil: pid reuse, process groups), health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from .. import probes
from ..devconfig import DevSettings
from ..errors import fail
from .checkout import APPS, HOST


@dataclass
class Tracked:
    name: str
    pid: int
    pgid: int
    port: int | None
    started: float
    starttime: str
    argv: list[str]
    log: str | None = None


def _proc_starttime(pid: int) -> str | None:
    """The process's start time as psutil reads it (the same pid reused by another process has
    another), or None once it has ended (a zombie has ended too)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{proc.create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def alive(t: Tracked) -> bool:
    """True when the tracked process still runs (and is the same process, not a reused pid)."""
    return _proc_starttime(t.pid) == t.starttime


def pidfile(ds: DevSettings, name: str) -> Path:
    return ds.run_dir / f"{name}.json"


def record(ds: DevSettings, name: str, pid: int, port: int | None, argv: list[str], log: str | None = None) -> Tracked:
    ds.run_dir.mkdir(parents=True, exist_ok=True)
    t = Tracked(name, pid, os.getpgid(pid), port, time.time(), _proc_starttime(pid) or "", argv, log)
    pidfile(ds, name).write_text(json.dumps(t.__dict__))
    return t


def tracked(ds: DevSettings) -> list[Tracked]:
    out = []
    for path in sorted(ds.run_dir.glob("*.json")) if ds.run_dir.is_dir() else []:
        try:
            out.append(Tracked(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    return out


def running(ds: DevSettings, name: str) -> Tracked | None:
    for t in tracked(ds):
        if t.name == name and alive(t):
            return t
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_tracked(t: Tracked, grace: float = 15.0) -> bool:
    """SIGTERM the tracked process group, wait (bounded), then SIGKILL. True if it was running."""
    if not alive(t):
        return False
    if t.pgid == t.pid or t.pgid != os.getpgid(0):
        target: Callable[[int], None] = lambda sig: os.killpg(t.pgid, sig)  # noqa: E731
    else:  # never signal our own group
        target = lambda sig: os.kill(t.pid, sig)  # noqa: E731
    try:
        target(signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (alive(t) or _group_alive(t.pgid)):
        time.sleep(0.2)
    if alive(t) or _group_alive(t.pgid):
        try:
            target(signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(25):
            if not (alive(t) or _group_alive(t.pgid)):
                break
            time.sleep(0.2)
    return True


def stop_all(ds: DevSettings, names: tuple[str, ...] | None = None) -> list[str]:
    """Stop what difyops started (the process manager first, so it ends its children itself)."""
    stopped = []
    order = sorted(tracked(ds), key=lambda t: (t.name != "up", t.name))
    for t in order:
        if names and t.name not in names:
            continue
        if stop_tracked(t):
            stopped.append(t.name)
        pidfile(ds, t.name).unlink(missing_ok=True)
    return stopped


def health(name: str, port: int | None, timeout: float = 2.0) -> str:
    """healthy / unhealthy / - for an app process by its port."""
    if not port:
        return "-"
    path = "/health" if name == "api" else "/"
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return "healthy" if resp.status < 500 else f"http {resp.status}"
    except urllib.error.HTTPError as exc:
        return "healthy" if exc.code < 500 else f"http {exc.code}"
    except (OSError, ValueError):
        return "unreachable"


def port_free_or_fail(port: int, key: str, ds: DevSettings) -> None:
    if probes.port_in_use(HOST, port):
        raise fail(f"port {port} on {HOST} is already in use: stop what holds it, or pass --port "
                   f"(or set {key} in {ds.env_file})")


def run_app(ds: DevSettings, name: str, argv: list[str], cwd: Path, env: dict[str, str], port: int | None,
            detach: bool = False, wait: float = 120.0) -> int:
    """Run an app process, tracked by a pid file. In the foreground: signals are passed on and the
    exit code returned. Detached: in its own session, logging to <dev_dir>/logs/<name>.log, and
    returned once healthy (api, web) or still alive after a moment (worker)."""
    already = running(ds, name)
    if already is not None:
        raise fail(f"{name} is already running (pid {already.pid}): `invoke dev.stop` first")
    if detach:
        ds.log_dir.mkdir(parents=True, exist_ok=True)
        log = ds.log_dir / f"{name}.log"
        with open(log, "ab") as handle:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        t = record(ds, name, proc.pid, port, argv, str(log))
        return wait_ready(ds, t, proc, wait)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, process_group=0)
    record(ds, name, proc.pid, port, argv)

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            stop_tracked(Tracked(name, proc.pid, proc.pid, port, 0, _proc_starttime(proc.pid) or "", argv))
        pidfile(ds, name).unlink(missing_ok=True)


def wait_ready(ds: DevSettings, t: Tracked, proc: subprocess.Popen, wait: float) -> int:
    deadline = time.monotonic() + wait
    settle = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pidfile(ds, t.name).unlink(missing_ok=True)
            tail = _tail(Path(t.log), 5) if t.log else ""
            raise fail(f"{t.name} exited with {proc.returncode} while starting: {tail or 'no output'} "
                       f"(full log: {t.log})")
        if t.port and health(t.name, t.port) == "healthy":
            return 0
        if not t.port and time.monotonic() > settle:
            return 0
        time.sleep(0.25)
    stop_tracked(t)
    pidfile(ds, t.name).unlink(missing_ok=True)
    raise fail(f"{t.name} did not answer on port {t.port} within {wait:.0f}s; it was stopped (log: {t.log})")


def _tail(path: Path, n: int) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


@dataclass
class AppRow:
    name: str
    state: str
    pid: str
    port: str
    health: str


def app_rows(ds: DevSettings) -> list[AppRow]:
    rows = []
    by_name = {t.name: t for t in tracked(ds)}
    for name in ("up",) + APPS if "up" in by_name else APPS:
        t = by_name.get(name)
        if t is None or not alive(t):
            rows.append(AppRow(name, "stopped" if t is None else "dead (stale pid file)", "-", "-", "-"))
            continue
        rows.append(AppRow(name, "running", str(t.pid), str(t.port or "-"),
                           health(name, t.port) if t.port else "running"))
    return rows
