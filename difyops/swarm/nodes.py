"""Swarm nodes: roles as node labels, the manager's reachability and labels, where tasks may run."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Iterable

from .. import clusters as cl
from .. import ha
from ..config import Settings
from ..errors import DifyopsError
from .stackfile import StackFile

# Node labels: one boolean label per role, so one node can hold several roles
# (`invoke swarm.label NODE data,gateway` sets difyops.role.data=true and difyops.role.gateway=true).
ROLES = ("data", "app", "gateway")


LABEL_PREFIX = "difyops.role."


ROLE_CONSTRAINT = re.compile(r"node\.labels\." + re.escape(LABEL_PREFIX) + r"([A-Za-z0-9_-]+)\s*==\s*true")


def docker(context: str | None, *args: str) -> list[str]:
    return ["docker", *(["--context", context] if context else []), *args]


def parse_roles(text: str) -> list[str]:
    roles = [r.strip() for r in (text or "").split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise DifyopsError(f"roles must be a comma-separated subset of {', '.join(ROLES)}, not {text!r}")
    return roles


def label_argv(context: str | None, node: str, roles: Iterable[str], clear: Iterable[str] = ()) -> list[str]:
    args = ["node", "update"]
    for role in roles:
        args += ["--label-add", f"{LABEL_PREFIX}{role}=true"]
    for role in clear:
        args += ["--label-rm", f"{LABEL_PREFIX}{role}"]
    return docker(context, *args, node)


def constraint(role: str) -> str:
    return f"node.labels.{LABEL_PREFIX}{role} == true"


def required_roles(stack_files: Iterable[StackFile]) -> set[str]:
    """The node roles the stacks' placement constraints ask for (difyops.role.<role> == true)."""
    roles = set()
    for stack_file in stack_files:
        for svc in stack_file.stack.get("services", {}).values():
            for rule in ((svc.get("deploy") or {}).get("placement") or {}).get("constraints") or []:
                roles.update(ROLE_CONSTRAINT.findall(rule))
    return roles


def network_create_argv(settings: Settings, network: str, context: str | None = None) -> list[str]:
    args = ["network", "create", "--driver", "overlay", "--attachable",
            "--label", f"{cl.STACK_LABEL}={settings.stack}"]
    if cl.network_internal(network):
        args.append("--internal")
    return docker(context, *args, cl.network_name(settings, network))


def deploy_argv(name: str, context: str | None = None) -> list[str]:
    # --prune: services gone from the file go; --with-registry-auth: nodes pull with our login.
    return docker(context, "stack", "deploy", "--prune", "--with-registry-auth", "--detach=true",
                  "--resolve-image", "never", "-c", "-", name)


def _run(c: Any, argv: list[str], **kwargs):
    return c.run(shlex.join(argv), **kwargs)


def unsupported_problems(env: dict[str, str]) -> list[str]:
    """What the one renderer would add to the data cluster that the stack conversion cannot carry
    yet: refused in pre-flight, one line each, never left out silently."""
    problems = []
    if ha.enabled(env):
        problems.append(f"{ha.HA_SETTING}=true: the HA data layer (Patroni, etcd, HAProxy, Sentinel) is not supported "
                        "on Swarm yet; deploy it with Compose, or set it to false for Swarm")
    if ha.weaviate(env):
        problems.append("VECTOR_STORE=weaviate: the Weaviate overlay is not supported on Swarm yet; use pgvector "
                        "on Swarm, or deploy with Compose")
    return problems


def swarm_problems(c: Any, context: str | None, roles: Iterable[str]) -> list[str]:
    where = f"context {context}" if context else "the local engine"
    info = _run(c, docker(context, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"),
                hide=True, warn=True)
    if not info.ok:
        return [f"Docker is not reachable through {where}: check `docker {'--context ' + context + ' ' if context else ''}info`"]
    state = info.stdout.split()
    if not state or state[0] != "active":
        return [f"{where} is not part of a Swarm: run `docker swarm init` on the manager (docs: README, Swarm)"]
    if len(state) < 2 or state[1] != "true":
        return [f"{where} is a Swarm worker: point --context at a manager"]
    nodes = _run(c, docker(context, "node", "ls", "-q"), hide=True, warn=True)
    ids = nodes.stdout.split() if nodes.ok else []
    labels: set[str] = set()
    if ids:
        found = _run(c, docker(context, "node", "inspect", "--format", "{{json .Spec.Labels}}", *ids),
                     hide=True, warn=True)
        for line in (found.stdout or "").splitlines() if found.ok else []:
            try:
                labels |= {k for k, v in (json.loads(line) or {}).items() if v == "true"}
            except ValueError:
                continue
    return [f"no Swarm node is labelled for role {role}: run `invoke swarm.label NODE {role}`"
            for role in sorted(set(roles)) if f"{LABEL_PREFIX}{role}" not in labels]


def crowding(ps_lines: str) -> list[str]:
    """From `docker service ps --format '{{.Name}}\t{{.Node}}'` of running tasks: a warning for each
    service with several replicas of which more than one runs on the same node."""
    by_service: dict[str, dict[str, int]] = {}
    for line in (ps_lines or "").splitlines():
        name, _, node = line.partition("\t")
        service = name.strip().rsplit(".", 1)[0]
        if not service or not node.strip():
            continue
        nodes = by_service.setdefault(service, {})
        nodes[node.strip()] = nodes.get(node.strip(), 0) + 1
    warnings = []
    for service, nodes in sorted(by_service.items()):
        total = sum(nodes.values())
        for node, count in sorted(nodes.items()):
            if total > 1 and count > 1:
                warnings.append(f"{service}: {count} of {total} replicas run on node {node}; losing that node "
                                f"stops them together. Label more nodes for the role (replicas + 1 nodes keep "
                                f"replicas apart through start-first updates)")
    return warnings


def nodes_for(c: Any, context: str | None, svc: dict[str, Any]) -> int:
    """How many nodes that can take a task now (Ready, Active) carry every role label the service's
    placement asks for."""
    rules = ((svc.get("deploy") or {}).get("placement") or {}).get("constraints") or []
    roles = sorted({role for rule in rules for role in ROLE_CONSTRAINT.findall(rule)})
    filters = [arg for role in roles for arg in ("--filter", f"node.label={LABEL_PREFIX}{role}=true")]
    found = _run(c, docker(context, "node", "ls", *filters, "--format", "{{.Status}} {{.Availability}}"),
                 hide=True, warn=True)
    return sum(1 for line in (found.stdout or "").splitlines() if line.split() == ["Ready", "Active"]) if found.ok else 0
