"""What an upgrade across Dify releases adds to the rolling replacement of rollout.py: the plan of
phases, what the target release set (difyops/release_sets) has that the running one has not, and
the pure builders the phases run.

A release upgrade (`prod.upgrade --version 1.16.1` on a 1.13.3 deployment) moves more than api, web
and the workers: the target release may add services (1.16's agent backend, local sandbox and its
SSRF proxy in the support cluster; 1.14's websocket api beside the api), secrets they need, networks
of their own, another plugin daemon and sandbox, and other gateway upstreams (/socket.io/ to the
websocket api). The order, so that nothing a user does fails while it happens:

  1. pre-flight        the target release set exists, pinned images resolve, secrets are well formed,
                       every image is present or pullable, the app clusters run (nothing changes);
  2. secrets           the target's new secrets generated into .env, each in its form (a backup of
                       .env is kept beside it first);
  3. backup            backup.create, as every upgrade (unless --no-backup);
  4. migrate           Dify's migration with the new api image, once; the schema must then be at
                       that image's head, or nothing moves (a rollback past it is refused here);
  5. new services      the target's own networks, then its services that live outside the app
                       clusters, started and healthy beside the running release (no traffic yet);
  6. plugin daemon and sandbox
                       moved with the api, in order: the old daemon stopped, the new one started on
                       the same storage volume (from 0.6 its image runs `commandline migrate` first),
                       healthy; then the sandbox;
  7. new release       api (with the websocket api where the release has it), web and workers of the
                       target started beside the old ones, every replica healthy;
  8. gateway           the routes whose upstream the release changes (/socket.io/, /openapi/) are
                       switched in the running gateway by a graceful reload (no connection dropped);
  9. drain             the old release drains and stops, as rollout.py does for any upgrade;
 10. record            services the target no longer has are removed; DIFY_VERSION and the image
                       pins are written to .env only now that everything is healthy.

An upgrade within one release set (new api and web images only) runs the same plan; the phases with
nothing to do say so and take no time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import release_sets
from .release_sets import ReleaseSet

# Clusters rolled by blue/green projects (rollout.py); the other clusters' services are moved in place.
APP_CLUSTERS = ("api", "web", "worker")
# Support services that move with the api, in this order (the daemon first: the api calls it).
LOCKSTEP = ("plugin_daemon", "sandbox")
# The gateway's variables for routes whose upstream a release changes -> the nginx variable its
# rendered routes snippet sets (nginx/templates/snippets/dify-routes.conf.template).
GATEWAY_ROUTE_VARIABLES = {"NGINX_SOCKET_IO_UPSTREAM": "dify_socket_io", "NGINX_OPENAPI_UPSTREAM": "dify_openapi"}
GATEWAY_ROUTES_FILE = "/etc/nginx/conf.d/snippets/dify-routes.conf"
# Switched routes (nginx/entrypoint.d/45-difyops-routes.sh): lines "NAME FROM TO" in this file; the
# gateway's watcher applies a change by a graceful reload and writes the file's checksum to `applied`;
# a gateway started later reads them as it renders (a restart keeps them). On Swarm the folder is a
# volume of the node (a one-shot task writes it there); under Compose it is in the container.
GATEWAY_ROUTES_DIR = "/etc/nginx/difyops-routes"
GATEWAY_ROUTES_OVERRIDE = f"{GATEWAY_ROUTES_DIR}/routes.env"
NO_GATEWAY_HERE = 3  # routes_script's exit code where no gateway watches the folder
_UPSTREAM = re.compile(r"^[a-z0-9][a-z0-9_.-]*:\d{1,5}$")
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")

PHASES = ("pre-flight", "secrets", "backup", "migrate", "new services", "plugin daemon and sandbox",
          "new release", "gateway", "drain", "record")


# ------------------------------------------------------------------ what the target is
def _repository(ref: str) -> str:
    name = ref.split("@", 1)[0]
    return name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name


def target_updates(env: Mapping[str, str], current: ReleaseSet, target: ReleaseSet,
                   images: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The .env values moving to `target` sets, and the problems that stop it (pure).

    DIFY_VERSION becomes the target's. An image variable .env leaves empty follows the release (the
    compose files and release_sets.release_variables give the official image). One .env pins: an
    explicit `images` entry (`--image KEY=REF`) wins; a pin of the official repository, or of a
    mirror of it (…/langgenius/dify-sandbox:0.2.14), takes the target's tag; the api and web pins take
    the version as their tag, as `--version` always did; any other pin (a local build) cannot be
    guessed and is refused with what to pass."""
    updates: dict[str, str] = {"DIFY_VERSION": target.release}
    problems: list[str] = []
    explicit = dict(images or {})
    known = {img.variable: img for img in target.images.values()}
    for key, ref in explicit.items():
        if key not in known:
            problems.append(f"--image {key}=…: {key} is not an image variable of Dify {target.release} "
                            f"(those are {', '.join(sorted(known))})")
        elif not _IMAGE_REF.fullmatch(ref or ""):
            problems.append(f"--image {key}={ref!r} is not an image reference")
    for variable, image in known.items():
        if variable in explicit:
            updates[variable] = explicit[variable]
            continue
        pinned = (env.get(variable) or "").strip()
        if not pinned:
            continue
        repo = _repository(pinned)
        old = current.image_by_variable(variable)
        if old is not None and old.ref == image.ref:
            continue  # the release does not change this image: the pin stays as it is
        official = {image.repository} | ({old.repository} if old else set())
        if any(repo == name or repo.endswith("/" + name) for name in official):
            updates[variable] = f"{repo}:{image.tag}"
        elif variable in ("DIFY_API_IMAGE", "DIFY_WEB_IMAGE"):
            updates[variable] = f"{repo}:{target.release}"
        else:
            problems.append(f"{variable}={pinned} is pinned in .env and is not an image of Dify {target.release} "
                            f"({image.ref}): pass --image {variable}=REF for the release's image, or empty it "
                            "for the official one")
    # A gateway upstream .env sets to the running release's own (env.init wrote it) follows the
    # release; one set to anything else is the user's and stays.
    before, after = release_sets.gateway_variables(current), release_sets.gateway_variables(target)
    for key in GATEWAY_ROUTE_VARIABLES:
        value = (env.get(key) or "").strip()
        if value and value == before.get(key) and after.get(key) and after[key] != value:
            updates[key] = after[key]
    return updates, problems


def gateway_values(env: Mapping[str, str], release: ReleaseSet) -> dict[str, str]:
    """The upstream each gateway route variable has for a deployment: .env's, else the release's."""
    own = release_sets.gateway_variables(release)
    return {key: (env.get(key) or "").strip() or own[key] for key in GATEWAY_ROUTE_VARIABLES if key in own
            or (env.get(key) or "").strip()}


def target_images(env: Mapping[str, str], target: ReleaseSet) -> dict[str, str]:
    """Every Dify image variable of `target` and the ref it runs with `env` (the target's .env
    values): .env's pin where it has one, the release's official image otherwise."""
    return {img.variable: (env.get(img.variable) or "").strip() or img.ref for img in target.images.values()}


def compose_values(env: Mapping[str, str], target: ReleaseSet) -> dict[str, str]:
    """The process environment that makes Compose render `target` for a deployment whose .env may
    still say the running release: DIFY_VERSION, every image (target_images) and the gateway
    upstreams the release needs, where .env does not set them itself."""
    values = {key: value for key, value in release_sets.release_variables(target).items()
              if not (env.get(key) or "").strip() or key == "DIFY_VERSION"}
    values["DIFY_VERSION"] = target.release
    values.update(target_images(env, target))
    return values


def secrets_to_generate(env: Mapping[str, str], target: ReleaseSet,
                        check: "list[str] | None" = None) -> tuple[dict[str, str], list[str]]:
    """The target's secrets .env lacks, each generated in its form, and the problems of those it
    sets badly (a malformed value, upstream's published default), among `check` (default: all).
    Never puts a value in a problem."""
    generated: dict[str, str] = {}
    problems: list[str] = []
    for name, secret in target.secrets.items():
        value = (env.get(name) or "").strip()
        if not value:
            if secret.required:
                generated[name] = secret.generate()
            continue
        problem = secret.problem(value) if check is None or name in check else None
        if problem:
            problems.append(f"{problem} (Dify {target.release} needs it; `invoke env.check` says the same)")
    return generated, problems


def new_services(current: ReleaseSet, target: ReleaseSet) -> dict[str, tuple[str, ...]]:
    """cluster -> the target's services it lacks, outside the app clusters (those come up with the
    new release's projects): started healthy before any traffic moves."""
    found: dict[str, tuple[str, ...]] = {}
    for name, service in target.services.items():
        if name not in current.services and service.cluster not in APP_CLUSTERS:
            found.setdefault(service.cluster, ())
            found[service.cluster] += (name,)
    return found


def retired_services(current: ReleaseSet, target: ReleaseSet) -> dict[str, tuple[str, ...]]:
    """cluster -> services of the running release the target no longer has, outside the app
    clusters (a rollback to a release without them): removed once the old release is gone."""
    return new_services(target, current)


def lockstep_moves(current_images: Mapping[str, str], target_images_: Mapping[str, str],
                   target: ReleaseSet) -> tuple[str, ...]:
    """The support services (plugin daemon, sandbox) whose image the upgrade changes, in order."""
    moves = []
    for name in LOCKSTEP:
        service = target.services.get(name)
        if service is None or service.image is None:
            continue
        variable = target.image(service.image).variable
        if current_images.get(variable) != target_images_.get(variable):
            moves.append(name)
    return tuple(moves)


def gateway_changes(current_values: Mapping[str, str], target_values: Mapping[str, str]) -> dict[str, str]:
    """The gateway route variables whose upstream the target changes: variable -> new host:port."""
    return {key: target_values[key] for key in GATEWAY_ROUTE_VARIABLES
            if key in target_values and current_values.get(key) != target_values[key]}


def route_switches(env: Mapping[str, str], target_env: Mapping[str, str], current: ReleaseSet,
                   target: ReleaseSet) -> dict[str, tuple[str, str]]:
    """The gateway routes an upgrade moves: NAME -> (the running gateway's upstream, the target's),
    what routes_script writes."""
    running, wanted = gateway_values(env, current), gateway_values(target_env, target)
    return {key: (running.get(key, ""), value) for key, value in gateway_changes(running, wanted).items()}


def routes_watched(env: Mapping[str, str]) -> bool:
    """Whether the gateway watches for switched routes (NGINX_ROUTES_POLL above 0, the default 1)."""
    return (env.get("NGINX_ROUTES_POLL") or "1").strip() != "0"


def new_networks(current: ReleaseSet, target: ReleaseSet) -> tuple[str, ...]:
    """The release set's own networks (beyond backend, ssrf and app) the target needs."""
    return tuple(sorted(target.networks))


def routes_script(switches: Mapping[str, tuple[str, str]], wait_seconds: int = 60,
                  no_gateway_code: int = NO_GATEWAY_HERE) -> str:
    """A shell script that switches gateway routes where it runs (in the gateway container, or in a
    one-shot task beside it on a Swarm node): it writes `switches` (NAME -> (FROM, TO): where the
    gateway was created with NAME=FROM, TO is used) into GATEWAY_ROUTES_OVERRIDE, keeping the file's
    other names, then waits, bounded, until the gateway's watcher applied them (nginx -t, a graceful
    reload: no connection dropped). Where no watcher ran in the last 5 s it exits with
    `no_gateway_code` (a gateway started there later reads the file). Every value is host:port,
    checked here, so nothing else reaches the script."""
    lines = []
    for key, (old, new) in sorted(switches.items()):
        if key not in GATEWAY_ROUTE_VARIABLES:
            raise ValueError(f"{key} is not a gateway route variable")
        for value in (old, new):
            if not _UPSTREAM.fullmatch(value):
                raise ValueError(f"{key}={value!r} is not host:port")
        lines.append(f"'{key} {old} {new}'")
    d, f = GATEWAY_ROUTES_DIR, GATEWAY_ROUTES_OVERRIDE
    others = " ".join(f"-e '^{k} '" for k in sorted(switches))
    return "; ".join([
        "set -eu",
        f"mkdir -p {d}",
        f"{{ grep -v {others} {f} 2>/dev/null || true; printf '%s\\n' {' '.join(lines)}; }} > {f}.new",
        f"mv {f}.new {f}",
        f'want="$(cksum < {f})"',
        f"if ! [ -e {d}/.watcher ] || [ $(( $(date +%s) - $(stat -c %Y {d}/.watcher) )) -gt 5 ]; then "
        f"echo 'no gateway watches {d} here: one started later reads {f}'; exit {no_gateway_code}; fi",
        "i=0",
        f'while [ "$(cat {d}/applied 2>/dev/null)" != "$want" ]; do i=$((i + 1)); '
        f"if [ $i -gt {int(wait_seconds)} ]; then echo 'the gateway did not apply {f} within {int(wait_seconds)}s "
        "(see its log)' >&2; exit 1; fi; sleep 1; done",
        f"echo 'the gateway here applied {f}'",
    ])


def gateway_switch_args(switches: Mapping[str, tuple[str, str]]) -> list[str]:
    """`docker compose … exec` arguments running routes_script in the gateway's nginx container."""
    return ["exec", "-T", "nginx", "sh", "-c", routes_script(switches)]


# ------------------------------------------------------------------ the plan, and its timings
@dataclass(frozen=True)
class Plan:
    """What an upgrade from one release set to another does, decided before anything changes."""
    current: ReleaseSet
    target: ReleaseSet
    secrets: tuple[str, ...]  # names generated into .env
    new_services: dict[str, tuple[str, ...]]
    networks: tuple[str, ...]
    lockstep: tuple[str, ...]
    gateway: dict[str, str]
    retired: dict[str, tuple[str, ...]]
    backup: bool
    app_services: dict[str, tuple[str, ...]] = field(default_factory=dict)  # cluster -> services, target
    gateway_switches: dict[str, tuple[str, str]] = field(default_factory=dict)  # route_switches

    @property
    def crosses_releases(self) -> bool:
        return self.current.release != self.target.release

    def work(self) -> dict[str, str]:
        """phase -> what it does in this plan ("" for nothing: the phase is skipped)."""
        new = ", ".join(f"{s} ({c})" for c, names in self.new_services.items() for s in names)
        retired = ", ".join(s for names in self.retired.values() for s in names)
        return {
            "pre-flight": f"Dify {self.current.release} -> {self.target.release}",
            "secrets": ", ".join(self.secrets),
            "backup": "backup.create" if self.backup else "",
            "migrate": "the api image's migration, then its head",
            "new services": new,
            "plugin daemon and sandbox": ", ".join(self.lockstep),
            "new release": ", ".join(s for names in self.app_services.values() for s in names),
            "gateway": ", ".join(f"{k}={v}" for k, v in self.gateway.items()),
            "drain": "the old api, web and workers",
            "record": ".env" + (f"; remove {retired}" if retired else ""),
        }

    def phases(self) -> list[str]:
        """Every phase, in order (those with nothing to do too: they say so)."""
        return list(PHASES)


def make_plan(env: Mapping[str, str], target_env: Mapping[str, str], current: ReleaseSet, target: ReleaseSet,
              generated: Mapping[str, str], backup: bool) -> Plan:
    current_images, next_images = target_images(env, current), target_images(target_env, target)
    switches = route_switches(env, target_env, current, target)
    app = {cluster: release_sets.services_in(target, cluster) for cluster in APP_CLUSTERS}
    return Plan(current, target, tuple(sorted(generated)), new_services(current, target),
                new_networks(current, target), lockstep_moves(current_images, next_images, target),
                {key: new for key, (_old, new) in switches.items()}, retired_services(current, target), backup,
                app, switches)


class Phases:
    """Prints `[upgrade] phase N/M name ... 4.2s` as each phase ends (and what it did), and keeps
    the timings for the history."""

    def __init__(self, action: str, names: list[str], say: Any, clock=time.monotonic):
        self.action, self.names, self.say, self.clock = action, names, say, clock
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def label(self, name: str) -> str:
        # "\[" : the reporter reads rich markup, and [upgrade] would be taken for a tag.
        return f"\\[{self.action}] phase {self.names.index(name) + 1}/{len(self.names)} {name}"

    def start(self, name: str, doing: str = "") -> None:
        self.end()
        self._current = (name, self.clock())
        self.say(f"{self.label(name)}: {doing}" if doing else f"{self.label(name)}: nothing to do")

    def end(self) -> None:
        if self._current is None:
            return
        name, began = self._current
        seconds = round(self.clock() - began, 1)
        self.timings[name] = seconds
        self.say(f"{self.label(name)} ... {seconds:.1f}s")
        self._current = None


