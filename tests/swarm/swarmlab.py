"""A throwaway Docker Swarm of docker-in-docker nodes on this machine, for tests/swarm.

Nodes are containers of ``difyops-test/swarm-node:26`` (tests/swarm/node/Dockerfile: Debian 13's
docker.io) run without --privileged, as ../shared/ENVIRONMENT.md found to work. Each node's Docker
socket is also bound to a folder of the host, so a Docker context reaches the manager
(``unix://<dir>/docker.sock``): the tasks under test drive the Swarm through ``--context`` as they
would drive a remote manager through ``ssh://``. ``start_engine`` starts one more node in no
Swarm: another server with a Docker engine of its own (tests/smoke/test_61_move.py). Every name
starts with a per-run prefix; ``destroy`` removes every container, volume, network, folder and
context it made.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.loadgen import KeepAlive  # noqa: E402

NODE_IMAGE = "difyops-test/swarm-node:26"
NODE_DOCKERFILE_DIR = Path(__file__).resolve().parent / "node"

# What a dind node needs without --privileged. Where the VM withholds CAP_SYS_RESOURCE, some
# engines want it dropped explicitly and others refuse to drop what they cannot grant:
# node_run_flags() asks the engine which.
NODE_RUN_FLAGS = [
    "--cap-add", "ALL",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
]


def node_run_flags() -> list[str]:
    probe = sh("docker", "run", "--rm", "--cap-drop", "SYS_RESOURCE", *NODE_RUN_FLAGS, NODE_IMAGE, "true",
               check=False, timeout=120)
    return NODE_RUN_FLAGS + (["--cap-drop", "SYS_RESOURCE"] if probe.returncode == 0 else [])


def storage_driver(flags: list[str]) -> str:
    """overlay2 where a node can mount overlayfs on its /var/lib/docker (a volume on the host's
    filesystem, so not overlay on overlay): images load once per layer and containers start
    without copying. Otherwise vfs, which works everywhere but copies every layer in full."""
    probe = sh("docker", "run", "--rm", *flags, "--entrypoint", "/bin/sh", "--tmpfs", "/x", NODE_IMAGE, "-c",
               "mkdir -p /x/l /x/u /x/w /x/m && mount -t overlay overlay "
               "-o lowerdir=/x/l,upperdir=/x/u,workdir=/x/w /x/m && umount /x/m", check=False, timeout=120)
    return "overlay2" if probe.returncode == 0 else "vfs"


def sh(*argv: str, check: bool = True, timeout: float = 300, input: bytes | None = None,
       text: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input,
                            text=text if input is None else False)
    if check and result.returncode != 0:
        err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({result.returncode}): {err.strip()[-800:]}")
    return result


@dataclass
class Node:
    name: str  # the container's name on this host
    role: str  # manager | worker | engine (start_engine: in no Swarm)
    sockdir: Path

    @property
    def host(self) -> str:
        """DOCKER_HOST of the node's engine."""
        return f"unix://{self.sockdir}/docker.sock"

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return sh("docker", "-H", self.host, *args, check=check, timeout=timeout)

    @property
    def address(self) -> str:
        return sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  self.name).stdout.strip()


@dataclass
class Lab:
    prefix: str
    workdir: Path
    nodes: list[Node] = field(default_factory=list)
    context: str = ""
    published: dict[int, int] = field(default_factory=dict)  # gateway port in the swarm -> 127.0.0.1 port
    _flags: list[str] = field(default_factory=list)  # node_run_flags(), asked once
    _driver: str = ""

    @property
    def network(self) -> str:
        return f"{self.prefix}-net"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def ensure_node_image(self) -> None:
        if sh("docker", "image", "inspect", NODE_IMAGE, check=False).returncode != 0:
            sh("docker", "build", "-q", "-t", NODE_IMAGE, str(NODE_DOCKERFILE_DIR), timeout=900)

    def start(self, workers: int, publish: dict[int, int]) -> None:
        """Start 1 manager + `workers` nodes, form the Swarm, make the context."""
        self.ensure_node_image()
        self.published = dict(publish)
        names = ["manager"] + [f"worker{i}" for i in range(1, workers + 1)]
        for short in names:
            self._run_node(short, "manager" if short == "manager" else "worker",
                           publish if short == "manager" else {})
        for node in self.nodes:
            self._wait_daemon(node)
        addr = self.manager.address
        self.manager.docker("swarm", "init", "--advertise-addr", addr)
        # Faster failure detection than the 5 s default, so a lost node is noticed within seconds.
        self.manager.docker("swarm", "update", "--dispatcher-heartbeat", "2s")
        token = self.manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.workers:
            node.docker("swarm", "join", "--token", token, f"{addr}:2377")
        self.context = self.prefix
        sh("docker", "context", "create", self.context, "--description", "difyops swarm test (temporary)",
           "--docker", f"host=unix://{self.manager.sockdir}/docker.sock")

    def start_engine(self, short: str, publish: dict[int, int], mounts: list[tuple[str, str, bool]] = ()) -> Node:
        """One more Docker engine of its own, in no Swarm (another server, for tests/smoke/test_61_move):
        reached through ``node.host`` (DOCKER_HOST); ``mounts`` (host path, node path, read-only) make
        host folders visible to the engine, so its bind mounts find them at the same paths."""
        self.ensure_node_image()
        node = self._run_node(short, "engine", publish, mounts)
        self._wait_daemon(node)
        return node

    def _run_node(self, short: str, role: str, publish: dict[int, int],
                  mounts: list[tuple[str, str, bool]] = ()) -> Node:
        if sh("docker", "network", "inspect", self.network, check=False).returncode != 0:
            sh("docker", "network", "create", "--label", f"difyops.test={self.prefix}", self.network)
        if not self._flags:
            self._flags = node_run_flags()
            self._driver = storage_driver(self._flags)
        sockdir = self.workdir / short
        sockdir.mkdir(parents=True, exist_ok=True)
        node = Node(f"{self.prefix}-{short}", role, sockdir)
        ports = []
        for inside, outside in publish.items():
            ports += ["-p", f"127.0.0.1:{outside}:{inside}"]
        volumes = []
        for source, target, read_only in mounts:
            volumes += ["-v", f"{source}:{target}" + (":ro" if read_only else "")]
        sh("docker", "run", "-d", "--name", node.name, "--hostname", short, "--network", self.network,
           "--label", f"difyops.test={self.prefix}", *self._flags, *ports, *volumes,
           # The node's container has IPv6 switched off: let dockerd's overlay bridges live with it.
           "-e", "DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1",
           # No registry here: run tasks from the loaded images without trying to pull first
           # (what docs/SWARM.md advises for offline nodes).
           "-e", "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1",
           "-v", f"{self.prefix}-{short}-lib:/var/lib/docker", "-v", f"{sockdir}:/sock",
           NODE_IMAGE, "dockerd", f"--storage-driver={self._driver}",
           "-H", "unix:///var/run/docker.sock", "-H", "unix:///sock/docker.sock")
        self.nodes.append(node)
        return node

    @staticmethod
    def _wait_daemon(node: Node, attempts: int = 60) -> None:
        for _ in range(attempts):  # bounded: about 60 s
            if node.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10).returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"dockerd in {node.name} did not answer within {attempts} s")

    def load_images(self, plan: dict[str, list[str]]) -> None:
        """docker save | docker load (the nodes have no registry either), all nodes at once.

        ``plan`` maps a node's short name to the refs it needs. Each distinct set of refs is saved
        once to a file under the lab's folder; the nodes then load it in parallel."""
        from concurrent.futures import ThreadPoolExecutor

        tars: dict[tuple[str, ...], Path] = {}
        for refs in plan.values():
            key = tuple(sorted(refs))
            if key not in tars:
                path = self.workdir / f"images-{len(tars)}.tar"
                sh("docker", "save", "-o", str(path), *key, timeout=900)
                tars[key] = path
        nodes = {node.name.removeprefix(f"{self.prefix}-"): node for node in self.nodes}

        def load(short: str) -> None:
            node = nodes[short]
            node.docker("load", "-q", "-i", str(tars[tuple(sorted(plan[short]))]), timeout=900)

        with ThreadPoolExecutor(max_workers=len(plan)) as pool:
            for future in [pool.submit(load, short) for short in plan]:
                future.result()
        for path in tars.values():
            path.unlink()

    def stream_images(self, node: Node, refs: list[str], timeout: float = 900) -> None:
        """docker save | docker load into one node, piped: the node loads while this host saves,
        and no tar file is written."""
        save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            load = subprocess.run(["docker", "-H", node.host, "load", "-q"], stdin=save.stdout, capture_output=True,
                                  timeout=timeout)
        finally:
            save.stdout.close()
            saved = save.wait(timeout=timeout)
        if saved != 0 or load.returncode != 0:
            raise RuntimeError(f"copying images into {node.name} failed: "
                               f"{(save.stderr.read() + load.stderr).decode(errors='replace').strip()[-800:]}")

    def node_id(self, node: Node) -> str:
        return node.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def destroy(self) -> list[str]:
        """Remove everything this lab made; returns what could not be removed."""
        left = []
        if self.context:
            sh("docker", "context", "rm", "-f", self.context, check=False)
        names = sh("docker", "ps", "-aq", "--filter", f"label=difyops.test={self.prefix}", check=False).stdout.split()
        if names:
            sh("docker", "rm", "-fv", *names, check=False, timeout=600)
        vols = sh("docker", "volume", "ls", "-q", "--filter", f"name={self.prefix}-", check=False).stdout.split()
        for vol in vols:
            if sh("docker", "volume", "rm", "-f", vol, check=False, timeout=600).returncode:
                left.append(f"volume {vol}")
        if sh("docker", "network", "inspect", self.network, check=False).returncode == 0:
            if sh("docker", "network", "rm", self.network, check=False).returncode:
                left.append(f"network {self.network}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        return left


class Load:
    """Steady requests to 127.0.0.1 in a few threads, bounded in count and time; counts failures.

    Each thread sends GET requests one after another on its own kept-alive connection
    (benchmarks.loadgen.KeepAlive: a GET that meets the close of a reused connection before its
    answer is sent once more, as HTTP clients do, and counted in `retried`). A failure is anything
    but a 200: an error status, a reset, a timeout. `versions` counts the `version` field of the
    JSON answers (which release served).
    """

    def __init__(self, port: int, path: str = "/console/api/ping", threads: int = 4,
                 max_requests: int = 200_000, max_seconds: float = 900, pause: float = 0.02):
        import threading

        self.port, self.path, self.threads = port, path, threads
        self.max_requests, self.max_seconds, self.pause = max_requests, max_seconds, pause
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.failures: list[tuple[float, str]] = []  # (time.monotonic() the request was sent, what)
        self.retried: dict[str, int] = {}  # what closed an idle kept-alive connection under a GET
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _count(self, ok: bool, what: str, sent: float = 0.0) -> None:
        with self._lock:
            if ok:
                self.ok += 1
                self.versions[what] = self.versions.get(what, 0) + 1
            else:
                self.failed += 1
                self.errors[what] = self.errors.get(what, 0) + 1
                self.failures.append((sent, what))

    def failed_after(self, moment: float) -> int:
        """Failed requests sent after `moment` (time.monotonic())."""
        with self._lock:
            return sum(1 for sent, _ in self.failures if sent > moment)

    def _run(self) -> None:
        import json as jsonlib

        client = KeepAlive(f"http://127.0.0.1:{self.port}", timeout=10)
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            with self._lock:
                if self.ok + self.failed >= self.max_requests:
                    break
            sent = time.monotonic()
            try:
                status, body = client.get(self.path)
                if status == 200:
                    self._count(True, jsonlib.loads(body).get("version", "?"))
                else:
                    self._count(False, f"HTTP {status}", sent)
            except Exception as exc:  # every failure counts, whatever its kind
                self._count(False, type(exc).__name__, sent)
            time.sleep(self.pause)
        client.close()
        with self._lock:
            for what, count in client.retried.items():
                self.retried[what] = self.retried.get(what, 0) + count

    def __enter__(self) -> "Load":
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    @property
    def total(self) -> int:
        return self.ok + self.failed
