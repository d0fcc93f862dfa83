"""`prod.upgrade --target swarm`: an upgrade across Dify releases on a Swarm deployment.

On Swarm the replacement itself is Swarm's: every Dify service carries an update_config
(compose/swarm/*.yml) that starts the new task before the old one stops (api, web, workers, the
sandbox, the gateway), or stops the old one first where two must never run at once (the plugin
daemon on its storage volume, beat, the local sandbox), and rolls a service back by itself when its
new task does not become healthy. What this module adds is the order and the release: the target
release set rendered for every cluster before anything changes, its secrets generated into .env
(a copy kept), then the clusters deployed in the order that moves nothing before what it needs:

  support   the release's new services (agent backend, local sandbox, its proxy) created, the plugin
            daemon (stop-first: its image migrates its own database) and the sandbox updated;
  api       the storage volume to the new image's user and Dify's migration as one-shot services,
            the schema at the image's head, then the api and the websocket api, start-first;
  worker    start-first, beat stop-first;  web   start-first;
  gateway   its tasks unchanged (the routes it runs with are pinned): the routes the release moves
            (/socket.io/ to the websocket api, /openapi/ to the api) are switched in the running
            gateways by a one-shot task per gateway node and a graceful reload (swarm/jobs.py
            switch_routes), so the gateway's port never closes, in host publish mode too.

The target is rendered from a staged copy of .env with the release's values (`.env.upgrading`
beside it, mode 0600), so .env itself names the running release until every cluster converged; then
.env gets the release and the staged copy goes. A failure leaves .env as it was (Swarm has rolled the
failed service back; a migration that ran stays applied: `backup.restore` goes back past it).
"""

from __future__ import annotations

import time
from typing import Any

from . import clusters as cl
from . import config, dotenv, envfile, release_sets, releases, stack, swarm
from . import rollout_release as rr
from .config import Settings
from .errors import DifyopsError, fail, refuse
from .report import Say, quiet
from .swarm import jobs

ORDER = ("support", "api", "worker", "web", "gateway")
PHASES = ("pre-flight", "secrets", *ORDER, "record")


def staged_path(settings: Settings):
    return settings.env_file.with_name(settings.env_file.name + ".upgrading")


def upgrade(c: Any, settings: Settings, updates: dict[str, str], context: str | None, timeout: int | None = None,
            say: Say = quiet, update_problems: list[str] | None = None) -> dict[str, Any]:
    started_at = time.monotonic()
    phases = rr.Phases("upgrade", list(PHASES), say)
    target_env = {**settings.env, **updates}
    phases.start("pre-flight", "the target release rendered for every cluster (nothing changes yet)")
    problems = list(update_problems or []) + stack.release_problems(settings.env, "DIFY_VERSION in .env")
    problems += stack.release_problems(target_env)
    generated: dict[str, str] = {}
    if not problems:
        current_rs, target_rs = release_sets.for_env(settings.env), release_sets.for_env(target_env)
        generated, secret_problems = rr.secrets_to_generate(
            target_env, target_rs, check=[k for k in target_rs.secrets if k not in current_rs.secrets])
        problems += secret_problems
        if current_rs.release == target_rs.release and \
                rr.target_images(settings.env, current_rs) == rr.target_images(target_env, target_rs):
            problems.append(f"the stack already runs Dify {target_rs.release} with these images: nothing to upgrade")
    refuse(problems, "nothing was changed")
    say(f"{phases.label('pre-flight')}: no backup is taken on Swarm: take yours first (the migration "
        "cannot be undone but by a restore)")
    base = {"target": "swarm", "release": {"from": current_rs.release, "to": target_rs.release},
            "from_env": {k: settings.env.get(k, "") for k in updates}, "to_env": dict(updates)}

    def finish(result: str, message: str) -> dict[str, Any]:
        phases.end()
        return releases.record(settings, "upgrade", result, seconds=round(time.monotonic() - started_at, 1),
                               message=message, phases=dict(phases.timings), **base)

    phases.start("secrets", f"generating {', '.join(sorted(generated))} into {settings.env_file}" if generated
                 else "none new (.env is backed up before anything changes it)")
    copy = dotenv.backup(settings.env_file)
    say(f"{phases.label('secrets')}: .env backed up to {copy} (restore it with `cp {copy} {settings.env_file}`)")
    if generated:
        dotenv.write_private(settings.env_file, envfile.with_values(
            settings.env_file.read_text(), generated,
            comment=f"# Secrets of Dify {target_rs.release} (generated by prod.upgrade)"))
    staged = staged_path(settings)
    # The gateway keeps the routes it runs with (its tasks unchanged: its port never closes); the
    # routes the release moves are switched in the running gateways once everything else moved.
    # Without a watcher (NGINX_ROUTES_POLL=0) nothing is pinned: Swarm replaces the gateway.
    switches = rr.route_switches(settings.env, target_env, current_rs, target_rs) if rr.routes_watched(target_env) \
        else {}
    pinned = {key: old for key, (old, _new) in switches.items()}
    dotenv.write_private(staged, envfile.with_values(settings.env_file.read_text(), {**updates, **pinned}))
    try:
        target = config.settings_for(staged, settings.stack, settings.wait_timeout)
        phases.end()
        selected = [cl.CLUSTERS[name] for name in ORDER]
        wait = int(timeout or settings.wait_timeout)
        try:
            timings = swarm.deploy(c, target, selected, context, wait, say=lambda line: say(f"  {line}"))
            if switches:
                mark = time.monotonic()
                jobs.switch_routes(c, target, context, switches, wait, say=lambda line: say(f"  {line}"))
                timings = [(n, s + (time.monotonic() - mark if n == "gateway" else 0)) for n, s in timings]
        except DifyopsError as exc:
            message = (f"{exc}; .env still names Dify {current_rs.release} (Swarm rolled back a service that "
                       "failed; a migration that ran stays applied)")
            finish("failed", message)
            raise fail(message) from None
        for name, seconds in timings:
            phases.timings[name] = round(seconds, 1)
            say(f"{phases.label(name)} ... {seconds:.1f}s")
        phases.start("record", ".env")
        dotenv.write_private(settings.env_file, envfile.with_values(settings.env_file.read_text(), updates))
    finally:
        staged.unlink(missing_ok=True)
    entry = finish("ok", "upgrade done")
    say(f"[green]upgrade done[/] on Swarm in {entry['seconds']}s: Dify {target_rs.release}")
    return entry
