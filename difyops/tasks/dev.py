"""dev: Dify from source on this host, with the development middleware in containers."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from invoke import Collection

from .base import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.table import Table

from .. import dev, envfile, paths, polling, probes
from ..devconfig import load_dev
from ..errors import fail

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _table_console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def api_env(src: Path) -> dict[str, str]:
    """api/.env as a process environment (Dify reads the file too; celery then agrees)."""
    path = src / "api" / ".env"
    if not path.exists():
        raise fail(f"{path} is missing: run `invoke dev.init` first")
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # uv uses the checkout's api/.venv
    env.update(envfile.read(path))
    env.setdefault("FLASK_APP", "app.py")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _exit(code: int) -> None:
    if code not in (0, -2, -15, 130, 143):  # ended by Ctrl-C or by dev.stop
        raise Exit(f"error: the process exited with {code}", code=code)


@task(
    iterable=["set"],
    help={
        "src": "the Dify checkout (default: DIFY_SRC, difyops.dify_src; else a clone of DIFY_VERSION)",
        "set": "KEY=VALUE for var/dev/middleware.env (ports, images, VECTOR_STORE); repeatable",
        "skip_install": "do not run `uv sync` and `pnpm install`",
        "no_web": "leave web/ alone (no web/.env.local, no pnpm install, no Node check)",
        "viewer": "also start the database viewer (Adminer on 127.0.0.1)",
        "update_connection": "overwrite connection keys in api/.env and web/.env.local that differ (with a backup)",
    },
)
def init(c, src=None, set=None, skip_install=False, no_web=False, viewer=False, update_connection=False):
    """Set up development: env files, middleware, dependencies, migrations."""
    ds = load_dev(c, src)
    overrides = envfile.assignments(set)
    checkout = dev.find_source(c, ds, say=err.print)
    dev.fail_on(dev.python_problems(c, checkout) + ([] if no_web else dev.node_problems(c, checkout)),
             "nothing was changed")
    dev.fail_on(probes.docker_problems(c), "nothing was changed")
    overrides["DIFY_SRC"] = str(checkout)
    dev.ensure_middleware_env(ds, overrides)
    dev.profiles(ds, viewer)  # an unknown VECTOR_STORE fails here, before anything starts
    dev.fail_on(dev.middleware_preflight(c, ds, viewer), "nothing was started")

    merges = [dev.merge_app_env(checkout / "api" / ".env", checkout / "api" / ".env.example",
                                dev.api_env_values(ds), update_connection)]
    if not no_web:
        merges.append(dev.merge_app_env(checkout / "web" / ".env.local", checkout / "web" / ".env.example",
                                        dev.web_env_values(ds), update_connection))
    for m in merges:
        rel = m.path.relative_to(checkout)
        if m.created:
            out.print(f"{rel}: written from {rel.parent / '.env.example'} (secrets generated, not shown)")
        else:
            out.print(f"{rel}: kept your values; added {len(m.added)} key(s), filled {len(m.updated)}"
                      + (f" (backup {m.backup.name})" if m.backup else ""))
        if m.differing:
            err.print(f"[yellow]note:[/] {rel} sets {', '.join(m.differing)} otherwise than the "
                              "development middleware; kept (use --update-connection to replace them)")

    err.print("[bold]middleware[/]: starting and waiting for health")
    seconds = dev.start_middleware(c, ds, viewer)
    out.print(f"middleware healthy in {seconds:.1f}s (project {ds.project})")
    if not skip_install:
        with c.cd(str(checkout / "api")):
            err.print("[bold]api[/]: uv sync")
            if not c.run("uv sync", warn=True, pty=False).ok:
                raise fail("`uv sync` failed in api/ (output above): fix it, then run `invoke dev.init` again")
        if not no_web:
            with c.cd(str(checkout / "web")):
                err.print("[bold]web[/]: pnpm install")
                if not c.run("pnpm install", warn=True, pty=False).ok:
                    raise fail("`pnpm install` failed in web/ (output above): fix it, then run dev.init again")
    dev.migrate_db(c, ds, checkout, say=err.print)
    out.print(f"ready: `invoke dev.up` runs api (:{ds.port('DEV_API_PORT', 5001)}), worker and web "
              f"(:{ds.port('DEV_WEB_PORT', 3000)})")


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
            "port": "port on 127.0.0.1 (default: DEV_API_PORT, 5001)",
            "detach": "run in the background (log in var/dev/logs/api.log) and return once /health answers",
            "container_access": "also relay the port from Docker's host gateway, so the plugin daemon reaches "
                                "the api (also on when DEV_API_CONTAINER_ACCESS=true)"})
def start_api(c, src=None, port=None, detach=False, container_access=False):
    """Run the api: flask --debug on 127.0.0.1, reloading on every change."""
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds)
    port = int(port or ds.port("DEV_API_PORT", 5001))
    dev.port_free_or_fail(port, "DEV_API_PORT", ds)
    argv = dev.api_argv(port)
    if container_access or ds.get("DEV_API_CONTAINER_ACCESS", "false").lower() == "true":
        gateway = dev.bridge_gateway(c)
        if gateway is None:
            raise fail("Docker's bridge gateway address is unknown (docker network inspect bridge): start "
                       "the api without --container-access")
        if probes.port_in_use(gateway, port):
            raise fail(f"port {port} on {gateway} (Docker's host gateway) is already in use: stop what holds it "
                       "or pass --port")
        argv = dev.relay_argv(gateway, port, argv)
    _exit(dev.run_app(ds, "api", argv, checkout / "api", api_env(checkout), port, detach))


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
            "queues": "comma-separated Celery queues (default: every queue of the release's entrypoint)",
            "no_reload": "do not restart the worker when a Python file changes",
            "detach": "run in the background (log in var/dev/logs/worker.log)"})
def start_worker(c, src=None, queues=None, no_reload=False, detach=False):
    """Run the Celery worker on Dify's queues, restarted when code changes."""
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds)
    argv = dev.worker_argv(checkout / "api", queues or dev.celery_queues(ds), reload=not no_reload)
    _exit(dev.run_app(ds, "worker", argv, checkout / "api", api_env(checkout), None, detach))


@task(help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
            "port": "port on 127.0.0.1 (default: DEV_WEB_PORT, 3000)",
            "detach": "run in the background (log in var/dev/logs/web.log) and return once / answers"})
def start_web(c, src=None, port=None, detach=False):
    """Run the web front end: `pnpm dev` on 127.0.0.1."""
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds, need_python=False, need_node=True, need_middleware=False)
    port = int(port or ds.port("DEV_WEB_PORT", 3000))
    dev.port_free_or_fail(port, "DEV_WEB_PORT", ds)
    env = dict(os.environ, PORT=str(port), HOSTNAME=dev.HOST)
    _exit(dev.run_app(ds, "web", dev.web_argv(port), checkout / "web", env, port, detach))


@task(default=True, help={"src": "the Dify checkout (default: DIFY_SRC or what dev.init used)",
            "detach": "run in the background (log in var/dev/logs/up.log) and return once all answer",
            "queues": "comma-separated Celery queues (default: every queue of the release's entrypoint)"})
def up(c, src=None, detach=False, queues=None):
    """Run api, worker and web in one terminal, with prefixed coloured logs (honcho)."""
    ds = load_dev(c, src)
    checkout = dev.ready_checkout(c, ds, need_node=True)
    if dev.running(ds, "up"):
        raise fail(f"dev.up is already running (pid {dev.running(ds, 'up').pid}): `invoke dev.stop` first")
    api_port, web_port = ds.port("DEV_API_PORT", 5001), ds.port("DEV_WEB_PORT", 3000)
    for name, port, key in (("api", api_port, "DEV_API_PORT"), ("web", web_port, "DEV_WEB_PORT")):
        if dev.running(ds, name):
            raise fail(f"{name} is already running: `invoke dev.stop` first")
        dev.port_free_or_fail(port, key, ds)
    ds.run_dir.mkdir(parents=True, exist_ok=True)
    procfile = ds.run_dir / "Procfile"
    procfile.write_text(dev.procfile(ds, checkout, api_port, web_port, queues or dev.celery_queues(ds)))
    # The children find the same state folder; nothing else (no project .env) reaches them.
    child_env = ds.run_dir / "Procfile.env"
    child_env.write_text(f"INVOKE_DIFYOPS_DEV_DIR={ds.state_dir}\nINVOKE_DIFYOPS_DEV_STACK={ds.stack}\n")
    argv = [sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(paths.ROOT),
            "-e", str(child_env)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_DIFYOPS_DEV")}
    if not detach:
        _exit(dev.run_app(ds, "up", argv, paths.ROOT, env, None))
        return
    dev.run_app(ds, "up", argv, paths.ROOT, env, None, detach=True)
    def all_up() -> bool:
        rows = {r.name: r for r in dev.app_rows(ds)}
        if dev.running(ds, "up") is None:
            raise fail(f"dev.up ended while starting: see {ds.log_dir / 'up.log'}")
        return all(rows[n].state == "running" for n in dev.APPS) and rows["api"].health == "healthy" \
            and rows["web"].health == "healthy"

    if polling.until(all_up, 180, interval=0.5):
        out.print(f"api http://localhost:{api_port}, web http://localhost:{web_port}, worker running "
                  f"(logs: invoke dev.logs)")
        return
    dev.stop_all(ds)
    raise fail(f"api, worker and web did not all come up within 180s; stopped them (see {ds.log_dir / 'up.log'})")


@task(help={"keep_middleware": "stop the app processes only; leave the middleware running",
            "src": "the Dify checkout (unused; accepted for symmetry)"})
def stop(c, keep_middleware=False, src=None):
    """Stop what dev started (app processes by pid file) and the middleware."""
    ds = load_dev(c, src)
    stopped = dev.stop_all(ds)
    out.print(f"stopped: {', '.join(stopped) or 'no app process was running'}")
    if not keep_middleware:
        dev.stop_middleware(c, ds)
        out.print(f"middleware {ds.project}: down (data kept; `invoke dev.reset` wipes it)")


@task(help={"json": "print JSON instead of the table (for scripts)"})
def status(c, json_=False):
    """One table: middleware containers and app processes, with health and ports."""
    ds = load_dev(c)
    services = dev.middleware_rows(c, ds) if ds.env_file.exists() else []
    apps = dev.app_rows(ds)
    if json_:
        print(json.dumps({"middleware": [s.__dict__ for s in services], "apps": [a.__dict__ for a in apps]}))
        return
    table = Table(title=f"development environment ({ds.project})")
    for column in ("kind", "name", "state", "health", "pid", "ports"):
        table.add_column(column)
    colours = {"healthy": "green", "unhealthy": "red", "starting": "yellow", "unreachable": "red"}

    def paint(text):
        colour = colours.get(text)
        return f"[{colour}]{text}[/]" if colour else text

    for s in services:
        table.add_row("container", s.service, s.state, paint(s.health), "-", s.ports)
    for a in apps:
        table.add_row("process", a.name, a.state, paint(a.health), a.pid,
                      f"{dev.HOST}:{a.port}" if a.port not in ("-", "None") else "-")
    _table_console().print(table)
    if not ds.env_file.exists():
        out.print("middleware: not set up (run `invoke dev.init`)")



@task(help={"name": "api, worker, web, up or middleware (default: every app log)",
            "follow": "keep following", "tail": "lines to start with"})
def logs(c, name=None, follow=False, tail="100"):
    """Show the logs of detached app processes or of the middleware."""
    ds = load_dev(c)
    if name == "middleware":
        args = ["logs", "--no-color", "--tail", str(tail)] + (["--follow"] if follow else [])
        dev.run_compose(c, ds, *args, warn=True, pty=False)
        return
    names = [name] if name else ["up", *dev.APPS]
    files = [ds.log_dir / f"{n}.log" for n in names if (ds.log_dir / f"{n}.log").exists()]
    if not files:
        raise fail(f"no log for {name or 'any app'} in {ds.log_dir}: foreground processes log to their "
                   "terminal; `--detach` ones log here")
    argv = ["tail", "-n", str(tail)] + (["-F"] if follow else []) + [str(f) for f in files]
    c.run(shlex.join(argv), warn=True, pty=False)


@task(help={"yes": "do not ask for confirmation", "no_start": "leave the middleware stopped afterwards",
            "src": "the Dify checkout (default: DIFY_SRC or what dev.init used)"})
def reset(c, yes=False, no_start=False, src=None):
    """Wipe the middleware's data after confirmation, then start it fresh and migrate."""
    ds = load_dev(c, src)
    if not ds.env_file.exists():
        raise fail(f"nothing to reset: {ds.env_file} does not exist (run `invoke dev.init`)")
    if not yes:
        answer = input(f"Delete every volume of {ds.project} (database, Redis, plugin storage)? "
                       f"Type {ds.stack} to confirm: ")
        if answer.strip() != ds.stack:
            raise fail("not confirmed; nothing was deleted")
    stopped = dev.stop_all(ds, ("up", "api", "worker"))
    dev.stop_middleware(c, ds, volumes=True)
    out.print(f"middleware {ds.project}: data wiped" + (f" (stopped {', '.join(stopped)})" if stopped else ""))
    if no_start:
        return
    seconds = dev.start_middleware(c, ds)
    out.print(f"middleware healthy again in {seconds:.1f}s")
    if ds.dify_src or (ds.state_dir / "dify").exists():
        dev.migrate_db(c, ds, dev.find_source(c, ds, clone=False), say=err.print)


@task(help={"command": "run this SQL and exit instead of an interactive psql",
            "database": "database (default: DB_DATABASE, dify)"})
def db(c, command=None, database=None):
    """Open psql inside the development database container."""
    ds = load_dev(c)
    problem = dev.middleware_down_problem(c, ds)
    if problem:
        raise fail(problem)
    args = ["exec"] + (["-T"] if command else []) + ["db_postgres", "psql", "-U", ds.get("DB_USERNAME", "postgres"),
                                                      "-d", database or ds.get("DB_DATABASE", "dify")]
    if command:
        args += ["-v", "ON_ERROR_STOP=1", "-c", command]
    result = dev.run_compose(c, ds, *args, warn=True, pty=not command)
    if not result.ok:
        raise Exit(code=result.exited or 1)


@task(help={"command": "run this redis-cli command (e.g. 'DBSIZE') and exit"})
def redis(c, command=None):
    """Open redis-cli inside the development Redis container (authenticated)."""
    ds = load_dev(c)
    problem = dev.middleware_down_problem(c, ds)
    if problem:
        raise fail(problem)
    args = ["exec"] + (["-T"] if command else []) + ["redis", "redis-cli"] + (shlex.split(command) if command else [])
    result = dev.run_compose(c, ds, *args, warn=True, pty=not command)
    if not result.ok:
        raise Exit(code=result.exited or 1)


ns = Collection("dev")
for t in (init, start_api, start_worker, start_web, up, stop, status, logs, reset, db, redis):
    ns.add_task(t)
