"""The development environment: Dify from source on the host, middleware in containers.

Pure parts (commands, env-file merging, the table) are plain functions; the tasks in
tasks/dev.py, middleware.py, api.py and web.py only parse arguments and call them.
App processes are tracked by pid files in <dev_dir>/run, so `dev.stop` ends what difyops
started and only that.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from . import envfile, probes, stack
from .devconfig import MIDDLEWARE_ENV_EXAMPLE, MIDDLEWARE_FILE, DevSettings
from .errors import fail

console = Console(stderr=True, highlight=False)

# Dify 1.13.3's self-hosted queue list (api/docker/entrypoint.sh; DIFY_CONTRACT.md).
CELERY_QUEUES = (
    "dataset,priority_dataset,priority_pipeline,pipeline,mail,ops_trace,app_deletion,plugin,"
    "workflow_storage,conversation,workflow,schedule_poller,schedule_executor,"
    "triggered_workflow_dispatcher,trigger_refresh_executor,retention"
)
VECTOR_PROFILES = {"pgvector": None, "weaviate": "weaviate", "qdrant": "qdrant"}
# Services that must be healthy before the api, worker or migrations can start.
CORE_SERVICES = ("db_postgres", "redis")
MIDDLEWARE_SERVICES = ("db_postgres", "redis", "sandbox", "ssrf_proxy", "plugin_daemon")
APPS = ("api", "worker", "web")
HOST = "127.0.0.1"  # every app process and published port binds here only
MIN_NODE = 22  # Dify's web wants Node 22 unless web/package.json says otherwise


# ---------------------------------------------------------------------------- the checkout

def checkout_problem(path: Path) -> str | None:
    """Why a folder is not a usable Dify checkout, or None."""
    if not path.is_dir():
        return f"{path} does not exist"
    for rel in ("api/pyproject.toml", "web/package.json"):
        if not (path / rel).is_file():
            return f"{path} is not a Dify checkout (no {rel})"
    return None


def find_source(c: Any, ds: DevSettings, clone: bool = True) -> Path:
    """The Dify checkout: the configured one as it is (offline), else a clone of DIFY_VERSION."""
    if ds.dify_src is not None:
        problem = checkout_problem(ds.dify_src)
        if problem:
            raise fail(f"{problem}: point DIFY_SRC (or --src) at a Dify checkout with api/ and web/")
        return ds.dify_src
    target = ds.state_dir / "dify"
    if checkout_problem(target) is None:
        return target
    if not clone:
        raise fail("no Dify source: set DIFY_SRC=/path/to/dify (or --src), or run `invoke dev.init` to clone it")
    if shutil.which("git") is None:
        raise fail("no Dify source and git is not installed: install git, or set DIFY_SRC=/path/to/dify")
    version = ds.get("DIFY_VERSION", "1.13.3")
    ds.state_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"no DIFY_SRC set: cloning Dify {version} into {target}")
    result = c.run(shlex.join(["git", "clone", "--depth", "1", "--branch", version, ds.dify_repo, str(target)]),
                   warn=True, hide="stdout")
    if not result.ok or checkout_problem(target):
        shutil.rmtree(target, ignore_errors=True)
        last = stack._last_line(result.stderr)
        raise fail(f"no Dify source: cloning {ds.dify_repo} failed ({last}); set DIFY_SRC=/path/to/dify "
                   "to use an existing checkout")
    return target


# ---------------------------------------------------------------------------- env files

def ensure_middleware_env(ds: DevSettings, overrides: dict[str, str] | None = None) -> bool:
    """Write <dev_dir>/middleware.env (0600, secrets generated) if missing; apply overrides to an
    existing one, keeping a backup. Returns True when the file changed. Reloads ds.env."""
    overrides = dict(overrides or {})
    ds.state_dir.mkdir(parents=True, exist_ok=True)
    path = ds.env_file
    if not path.exists():
        envfile.write_private(path, envfile.generate(MIDDLEWARE_ENV_EXAMPLE.read_text(), overrides))
        changed = True
    else:
        text = path.read_text()
        entries = _parse(path, text)
        current = envfile.as_dict(entries)
        todo = {k: v for k, v in overrides.items() if current.get(k) != v}
        changed = bool(todo)
        if changed:
            envfile.backup(path)
            envfile.write_private(path, render(entries, todo, "Set by dev.init --set"))
    ds.env = envfile.read(path)
    return changed


def _parse(path: Path, text: str) -> list[envfile.Entry]:
    try:
        return envfile.parse(text)
    except envfile.EnvFileError as exc:
        raise fail(f"{path}: {exc}: fix that line, then run the task again")


def render(entries: list[envfile.Entry], values: dict[str, str], banner: str) -> str:
    """Env text: existing lines kept (comments too), keys in ``values`` set in place, keys not
    present appended under a banner."""
    lines, seen = [], set()
    for entry in entries:
        if entry.key is not None and entry.key in values:
            lines.append(f"{entry.key}={values[entry.key]}")
            seen.add(entry.key)
        else:
            lines.append(entry.raw)
            if entry.key:
                seen.add(entry.key)
    extra = [k for k in values if k not in seen]
    if extra:
        lines += ["", f"# {banner}"] + [f"{k}={values[k]}" for k in extra]
    return "\n".join(lines) + "\n"


@dataclass
class EnvMerge:
    path: Path
    created: bool = False
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()  # connection keys the user set otherwise (kept)
    backup: Path | None = None


def api_env_values(ds: DevSettings) -> dict[str, str]:
    """What api/.env needs to reach the development middleware (Dify's variable names)."""
    pg, rd = ds.port("EXPOSE_POSTGRES_PORT", 5432), ds.port("EXPOSE_REDIS_PORT", 6379)
    api, web = ds.port("DEV_API_PORT", 5001), ds.port("DEV_WEB_PORT", 3000)
    ssrf = ds.port("EXPOSE_SSRF_PROXY_PORT", 3128)
    redis_pw = ds.get("REDIS_PASSWORD")
    api_url, web_url = f"http://localhost:{api}", f"http://localhost:{web}"
    return {
        "SECRET_KEY": ds.get("SECRET_KEY"),
        "CONSOLE_API_URL": api_url, "CONSOLE_WEB_URL": web_url, "SERVICE_API_URL": api_url,
        "APP_API_URL": api_url, "APP_WEB_URL": web_url, "FILES_URL": api_url,
        "DB_USERNAME": ds.get("DB_USERNAME", "postgres"), "DB_PASSWORD": ds.get("DB_PASSWORD"),
        "DB_HOST": HOST, "DB_PORT": str(pg), "DB_DATABASE": ds.get("DB_DATABASE", "dify"),
        "REDIS_HOST": HOST, "REDIS_PORT": str(rd), "REDIS_PASSWORD": redis_pw,
        "CELERY_BROKER_URL": f"redis://:{redis_pw}@{HOST}:{rd}/1",
        "VECTOR_STORE": ds.get("VECTOR_STORE", "pgvector"),
        "PGVECTOR_HOST": HOST, "PGVECTOR_PORT": str(pg), "PGVECTOR_USER": ds.get("DB_USERNAME", "postgres"),
        "PGVECTOR_PASSWORD": ds.get("DB_PASSWORD"), "PGVECTOR_DATABASE": ds.get("DB_DATABASE", "dify"),
        "CODE_EXECUTION_ENDPOINT": f"http://{HOST}:{ds.port('EXPOSE_SANDBOX_PORT', 8194)}",
        "CODE_EXECUTION_API_KEY": ds.get("SANDBOX_API_KEY"),
        "SSRF_PROXY_HTTP_URL": f"http://{HOST}:{ssrf}", "SSRF_PROXY_HTTPS_URL": f"http://{HOST}:{ssrf}",
        "PLUGIN_DAEMON_URL": f"http://{HOST}:{ds.port('EXPOSE_PLUGIN_DAEMON_PORT', 5002)}",
        "PLUGIN_DAEMON_KEY": ds.get("PLUGIN_DAEMON_KEY"),
        "INNER_API_KEY_FOR_PLUGIN": ds.get("PLUGIN_DIFY_INNER_API_KEY"),
        "PLUGIN_DIFY_INNER_API_KEY": ds.get("PLUGIN_DIFY_INNER_API_KEY"),
    }


def web_env_values(ds: DevSettings) -> dict[str, str]:
    api = ds.port("DEV_API_PORT", 5001)
    return {
        "NEXT_PUBLIC_API_PREFIX": f"http://localhost:{api}/console/api",
        "NEXT_PUBLIC_PUBLIC_API_PREFIX": f"http://localhost:{api}/api",
    }


# Keys whose value is never a user's choice when empty or one of Dify's public defaults.
_FILL_WHEN_UNSET = ("SECRET_KEY",)
# Keys that decide whether the app reaches the middleware at all: reported when they differ.
_CONNECTION_KEYS = ("DB_HOST", "DB_PORT", "DB_PASSWORD", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
                    "CELERY_BROKER_URL", "NEXT_PUBLIC_API_PREFIX")


def merge_app_env(path: Path, example: Path, wanted: dict[str, str], update_connection: bool = False) -> EnvMerge:
    """Create ``path`` from ``example`` with ``wanted`` set; on later runs add missing keys (ours
    and the example's) and keep every value the user has, after a backup."""
    result = EnvMerge(path)
    example_entries = _parse(example, example.read_text()) if example.is_file() else []
    if not path.exists():
        text = render(example_entries, wanted, "Set by difyops dev.init")
        envfile.write_private(path, text)
        result.created = True
        result.added = tuple(wanted)
        return result
    entries = _parse(path, path.read_text())
    current = envfile.as_dict(entries)
    values: dict[str, str] = {}
    for key, value in envfile.as_dict(example_entries).items():
        if key not in current:
            values[key] = wanted.get(key, value)
    for key, value in wanted.items():
        if key not in current:
            values[key] = value
        elif key in _FILL_WHEN_UNSET and (not current[key] or current[key] in envfile.KNOWN_PUBLIC_DEFAULTS):
            values[key] = value
        elif current[key] != value and key in _CONNECTION_KEYS:
            if update_connection:
                values[key] = value
            else:
                result.differing += (key,)
    result.added = tuple(k for k in values if k not in current)
    result.updated = tuple(k for k in values if k in current)
    if values:
        result.backup = envfile.backup(path)
        envfile.write_private(path, render(entries, values, f"Added by difyops dev.init {time.strftime('%Y-%m-%d')}"))
    return result


def app_env(src: Path) -> dict[str, str]:
    """The process environment for api commands: ours plus api/.env (Dify reads it too, but
    celery and flask subcommands then agree whatever loads it)."""
    env = dict(os.environ)
    path = src / "api" / ".env"
    if path.exists():
        env.update({k: v for k, v in envfile.read(path).items()})
    env.setdefault("FLASK_APP", "app.py")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------- middleware

def profiles(ds: DevSettings, viewer: bool = False) -> tuple[str, ...]:
    store = ds.get("VECTOR_STORE", "pgvector")
    if store not in VECTOR_PROFILES:
        raise fail(f"VECTOR_STORE={store!r} is not one the development middleware runs: choose "
                   f"{', '.join(VECTOR_PROFILES)}")
    chosen = [VECTOR_PROFILES[store]] if VECTOR_PROFILES[store] else []
    if viewer:
        chosen.append("viewer")
    return tuple(chosen)


def compose_argv(ds: DevSettings, *args: str, profiles: tuple[str, ...] = ()) -> list[str]:
    argv = ["docker", "compose", "-f", str(MIDDLEWARE_FILE), "--env-file", str(ds.env_file), "-p", ds.project]
    for profile in profiles:
        argv += ["--profile", profile]
    return argv + list(args)


def run_compose(c: Any, ds: DevSettings, *args: str, profiles: tuple[str, ...] = (), **kwargs):
    return c.run(shlex.join(compose_argv(ds, *args, profiles=profiles)), **kwargs)


def port_keys(ds: DevSettings, viewer: bool) -> list[str]:
    keys = ["EXPOSE_POSTGRES_PORT", "EXPOSE_REDIS_PORT", "EXPOSE_SANDBOX_PORT", "EXPOSE_SSRF_PROXY_PORT",
            "EXPOSE_PLUGIN_DAEMON_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT"]
    store = ds.get("VECTOR_STORE", "pgvector")
    if store == "weaviate":
        keys.append("EXPOSE_WEAVIATE_PORT")
    if store == "qdrant":
        keys.append("EXPOSE_QDRANT_PORT")
    if viewer:
        keys.append("EXPOSE_VIEWER_PORT")
    return keys


def middleware_preflight(c: Any, ds: DevSettings, viewer: bool = False) -> list[str]:
    problems = probes.docker_problems(c)
    if problems:
        return problems
    if not ds.env_file.exists():
        return [f"{ds.env_file} does not exist: run `invoke dev.init` (or `invoke middleware.start`) first"]
    ours = published_ports(c, ds)
    defaults = {"EXPOSE_POSTGRES_PORT": 5432, "EXPOSE_REDIS_PORT": 6379, "EXPOSE_SANDBOX_PORT": 8194,
                "EXPOSE_SSRF_PROXY_PORT": 3128, "EXPOSE_PLUGIN_DAEMON_PORT": 5002,
                "EXPOSE_PLUGIN_DEBUGGING_PORT": 5003, "EXPOSE_WEAVIATE_PORT": 8080,
                "EXPOSE_QDRANT_PORT": 6333, "EXPOSE_VIEWER_PORT": 8081}
    for key in port_keys(ds, viewer):
        port = ds.port(key, defaults[key])
        if port not in ours and probes.port_in_use(HOST, port):
            problems.append(f"port {port} on {HOST} is already in use: stop what holds it or set {key} "
                            f"in {ds.env_file}")
    return problems


def ps_records(c: Any, ds: DevSettings) -> list[dict]:
    result = run_compose(c, ds, "ps", "-a", "--format", "json", hide=True, warn=True)
    return stack._ps_records(result.stdout) if result.ok else []


def published_ports(c: Any, ds: DevSettings) -> set[int]:
    return {int(p["PublishedPort"]) for r in ps_records(c, ds) for p in (r.get("Publishers") or [])
            if p.get("PublishedPort")}


@dataclass
class ServiceRow:
    service: str
    state: str
    health: str
    ports: str


def middleware_rows(c: Any, ds: DevSettings) -> list[ServiceRow]:
    records = ps_records(c, ds)
    names = list(MIDDLEWARE_SERVICES) + sorted({r.get("Service", "") for r in records} - set(MIDDLEWARE_SERVICES))
    rows = []
    for service in names:
        mine = [r for r in records if r.get("Service") == service]
        if not mine:
            rows.append(ServiceRow(service, "absent", "-", ""))
            continue
        record = mine[0]
        state = record.get("State", "?")
        health = (record.get("Health") or "none") if state == "running" else "-"
        rows.append(ServiceRow(service, state, health, " ".join(stack._ports(record))))
    return rows


def middleware_down_problem(c: Any, ds: DevSettings) -> str | None:
    """None when db_postgres and redis are running and healthy; else what to do."""
    if not ds.env_file.exists():
        return f"the development middleware is not set up ({ds.env_file} is missing): run `invoke dev.init`"
    rows = {r.service: r for r in middleware_rows(c, ds)}
    bad = [f"{name} {rows[name].state}/{rows[name].health}" for name in CORE_SERVICES
           if rows[name].state != "running" or rows[name].health != "healthy"]
    if bad:
        return f"the development middleware is not running ({', '.join(bad)}): run `invoke middleware.start`"
    return None


def start_middleware(c: Any, ds: DevSettings, viewer: bool = False, timeout: int | None = None) -> float:
    problems = middleware_preflight(c, ds, viewer)
    if problems:
        for problem in problems:
            console.print(f"[red]problem:[/] {problem}")
        raise fail(f"{len(problems)} problem(s) before starting the middleware; nothing was started"
                   if len(problems) > 1 else problems[0])
    started = time.monotonic()
    result = run_compose(c, ds, "up", "-d", "--wait", "--wait-timeout", str(timeout or ds.wait_timeout),
                         "--remove-orphans", profiles=profiles(ds, viewer), warn=True)
    if not result.ok:
        raise fail("the development middleware did not become healthy: see `invoke middleware.status` "
                   "and `invoke middleware.logs`")
    return time.monotonic() - started


def stop_middleware(c: Any, ds: DevSettings, volumes: bool = False) -> None:
    """`down` the middleware. The named volumes (the data) are kept unless ``volumes``; the
    anonymous ones (an image's VOLUME path this file does not map) never are: a later `up` gives
    the new containers new ones, so `down` alone would leave them behind, empty and unused."""
    if not ds.env_file.exists():
        return
    every = ("weaviate", "qdrant", "viewer")  # every profile, so an opt-in viewer or vector store goes too
    if not volumes:
        # `rm --volumes` removes a container's anonymous volumes only; `down --volumes` would also
        # delete the named ones.
        run_compose(c, ds, "stop", "--timeout", "20", profiles=every, hide=True, warn=True)
        run_compose(c, ds, "rm", "--force", "--volumes", profiles=every, hide=True, warn=True)
    args = ["down", "--remove-orphans", "--timeout", "20"] + (["--volumes"] if volumes else [])
    run_compose(c, ds, *args, profiles=every, hide=True, warn=True)


# ---------------------------------------------------------------------------- prerequisites

def _version(text: str) -> tuple[int, ...]:
    return probes._version(text)


def python_problems(c: Any, src: Path) -> list[str]:
    if shutil.which("uv") is None:
        return ["uv is not installed: `pip install uv` (or see https://docs.astral.sh/uv/), then retry"]
    spec = _requires_python(src / "api" / "pyproject.toml")
    argv = ["uv", "python", "find", "--system"] + ([spec] if spec else [])
    result = c.run(shlex.join(argv), hide=True, warn=True)
    if not result.ok:
        return [f"no Python interpreter matches {spec or 'the api'} (api/pyproject.toml): install one "
                f"(e.g. with pyenv or apt) and put it on PATH"]
    return []


def _requires_python(pyproject: Path) -> str | None:
    try:
        import tomllib

        data = tomllib.loads(pyproject.read_text())
    except (OSError, ValueError):
        return None
    return (data.get("project") or {}).get("requires-python")


def node_problems(c: Any, src: Path) -> list[str]:
    if shutil.which("node") is None:
        return [f"Node.js is not installed: install Node {MIN_NODE} (e.g. from nodesource or nvm), then retry"]
    result = c.run("node --version", hide=True, warn=True)
    have = _version(result.stdout if result.ok else "")
    need = _node_minimum(src / "web" / "package.json")
    problems = []
    if have and have[0] < need:
        problems.append(f"Node {result.stdout.strip()} is too old: web/package.json needs Node {need} or newer")
    if shutil.which("pnpm") is None:
        problems.append("pnpm is not installed: `corepack enable pnpm` or `npm install -g pnpm`, then retry")
    return problems


def _node_minimum(package_json: Path) -> int:
    try:
        engines = json.loads(package_json.read_text()).get("engines") or {}
    except (OSError, ValueError):
        return MIN_NODE
    match = re.search(r"(\d+)", str(engines.get("node", "")))
    return int(match.group(1)) if match else MIN_NODE


# ---------------------------------------------------------------------------- commands

def api_argv(port: int) -> list[str]:
    """Dify's own: flask with the debugger and the reloader (reloads on every source change)."""
    return ["uv", "run", "flask", "run", "--host", HOST, "--port", str(port), "--debug"]


def bridge_gateway(c: Any) -> str | None:
    """The address Docker's host-gateway maps to (the default bridge's gateway), if Docker says."""
    result = c.run("docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}'", hide=True, warn=True)
    address = result.stdout.strip() if result.ok else ""
    return address if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address) else None


def relay_argv(gateway: str, port: int, argv: list[str]) -> list[str]:
    """Wrap the api so containers reach it on gateway:port (see difyops/devrelay.py)."""
    return [sys.executable, str(Path(__file__).resolve().parent / "devrelay.py"), "--listen", f"{gateway}:{port}", "--to", f"{HOST}:{port}",
            "--", *argv]


def celery_argv(queues: str = CELERY_QUEUES, pool: str = "gevent", concurrency: int = 1) -> list[str]:
    return ["uv", "run", "celery", "-A", "app.celery", "worker", "-P", pool, "-c", str(concurrency),
            "--loglevel", "INFO", "-Q", queues]


def worker_argv(api_dir: Path, queues: str = CELERY_QUEUES, reload: bool = True) -> list[str]:
    """Celery on Dify's queues; under watchfiles, restarted when a Python file changes."""
    celery = celery_argv(queues)
    if not reload:
        return celery
    return [sys.executable, "-m", "watchfiles", "--filter", "python", "--target-type", "command",
            "--sigint-timeout", "10", shlex.join(celery), str(api_dir)]


def web_argv(port: int) -> list[str]:
    return ["pnpm", "dev", "--port", str(port), "--hostname", HOST]


def migrate_argv() -> list[str]:
    return ["uv", "run", "flask", "db", "upgrade"]


# ---------------------------------------------------------------------------- processes

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
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended
        return None
    return fields[19]


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
    if running(ds, name):
        raise fail(f"{name} is already running (pid {running(ds, name).pid}): `invoke dev.stop` first")
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


def procfile(ds: DevSettings, src: Path, api_port: int, web_port: int, queues: str) -> str:
    """honcho's Procfile: each line runs our own foreground task, so each app records its pid."""
    base = [sys.executable, "-m", "invoke", "--search-root", str(Path(__file__).resolve().parent.parent)]
    lines = {
        "api": base + ["dev.start-api", "--src", str(src), "--port", str(api_port)],
        "worker": base + ["dev.start-worker", "--src", str(src), "--queues", queues],
        "web": base + ["dev.start-web", "--src", str(src), "--port", str(web_port)],
    }
    return "".join(f"{name}: exec {shlex.join(argv)}\n" for name, argv in lines.items())


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
