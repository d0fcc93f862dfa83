"""What a test session leaves on the Docker engine: its own containers, networks and volumes only.

The session's own: every name its suites took from `unique_name()` (recorded in the file
DIFYOPS_TEST_NAMES names), what starts with one of them and a `-` or `_`, containers labelled with
one (a compose project or io.difyops.stack), and the volumes such containers mounted that were
created while the session ran: anonymous volumes have no name to go by, so Docker's event stream
is watched for the whole session to see them. Nothing else on the engine is counted (other
sessions, other people's containers), whatever its name.

noxfile.py runs pytest inside a `Watch`; `finish()` lists what is left, removes it (so one failed
session does not leave it to the next) and returns the list; a non-empty list fails the session.
Standard library only (nox imports this outside the session's virtualenv).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .names import owns

OWNER_LABELS = ("com.docker.compose.project", "io.difyops.stack", "difyops.test")


class Watch:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.names_file = self.folder / "names"
        self.events_file = self.folder / "events.jsonl"
        self._proc: subprocess.Popen | None = None
        self._out = None

    def env(self) -> dict[str, str]:
        """What the test process needs to record its names."""
        return {"DIFYOPS_TEST_NAMES": str(self.names_file)}

    def start(self) -> "Watch":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names_file.write_text("")
        self._out = self.events_file.open("w")
        self._proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter", "type=volume", "--filter", "type=network"],
            stdout=self._out, stderr=subprocess.DEVNULL)
        time.sleep(1)  # connected before the first test creates anything
        return self

    def stop(self) -> None:
        if self._proc is not None:
            time.sleep(1)  # the last events of the session's teardown reach the file
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def names(self) -> list[str]:
        if not self.names_file.exists():
            return []
        return sorted({n for n in self.names_file.read_text().split() if n})

    def _events(self) -> list[dict]:
        events = []
        for line in self.events_file.read_text().splitlines() if self.events_file.exists() else []:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def own_volumes_seen(self, names: list[str]) -> set[str]:
        """Volumes created during the session and mounted by one of its own containers. Docker makes
        a container's anonymous volumes as it creates the container, just before its `create` event:
        one never mounted (its container never started) goes with the next container created."""
        created: list[str] = []
        mounted: dict[str, set[str]] = {}
        created_with: dict[str, str] = {}
        own_containers: set[str] = set()
        waiting: list[str] = []  # volumes created since the last container was
        for event in self._events():
            kind, action = event.get("Type"), event.get("Action")
            actor = event.get("Actor") or {}
            ident, attrs = actor.get("ID", ""), actor.get("Attributes") or {}
            if kind == "container" and action == "create":
                labels = [attrs[k] for k in OWNER_LABELS if attrs.get(k)]
                if owns(names, attrs.get("name", "")) or any(owns(names, label) for label in labels):
                    own_containers.add(ident)
                created_with.update((volume, ident) for volume in waiting)
                waiting = []
            elif kind == "volume" and action == "create":
                created.append(ident)
                waiting.append(ident)
            elif kind == "volume" and action == "mount":
                mounted.setdefault(ident, set()).add(attrs.get("container", ""))
        return {v for v in created if (mounted.get(v) or {created_with.get(v, "")}) & own_containers}

    def left(self) -> dict[str, list[str]]:
        """The session's own containers, networks and volumes still on the engine."""
        names = self.names()
        anonymous = self.own_volumes_seen(names)
        found = {}
        for kind, cmd in (("containers", ["docker", "ps", "-a", "--format", "{{.Names}}"]),
                          ("networks", ["docker", "network", "ls", "--format", "{{.Name}}"]),
                          ("volumes", ["docker", "volume", "ls", "--format", "{{.Name}}"])):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout.split()
            found[kind] = sorted(n for n in out if owns(names, n) or (kind == "volumes" and n in anonymous))
        return found

    def finish(self) -> tuple[dict[str, list[str]], str]:
        """Stop watching; list what is left of the session, remove it; (what was left, a summary)."""
        self.stop()
        left = self.left()
        for kind, items in left.items():
            remove = {"containers": ["docker", "rm", "-fv"], "networks": ["docker", "network", "rm"],
                      "volumes": ["docker", "volume", "rm", "-f"]}[kind]
            for item in items:
                subprocess.run([*remove, item], capture_output=True, timeout=300)
        names = self.names()
        volumes = len(self.own_volumes_seen(names))
        summary = (f"{len(names)} names of this session ({', '.join(names[:12])}"
                   f"{', ...' if len(names) > 12 else ''}), {volumes} volumes its containers made")
        return {k: v for k, v in left.items() if v}, summary
