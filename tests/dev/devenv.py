"""A development environment to test: a Dify-shaped checkout built from the stand-in (a TEST
DOUBLE) in a temp folder, its own state folder, a unique middleware project and free ports on
127.0.0.1 (conftest.py makes one for the session and removes everything afterwards)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import fixture
from testkit import LOCAL_IMAGES as STACK_IMAGES
from testkit import ROOT, STANDIN_IMAGES, free_ports, invoke, unique_name

# What the development middleware runs: local builds and the stand-in's sandbox and plugin daemon.
LOCAL_IMAGES = {
    **{k: STACK_IMAGES[k] for k in ("POSTGRES_IMAGE", "REDIS_IMAGE", "SSRF_PROXY_IMAGE")},
    **{k: STANDIN_IMAGES[k] for k in ("DIFY_SANDBOX_IMAGE", "DIFY_PLUGIN_DAEMON_IMAGE")},
    "ADMINER_IMAGE": "difyops-local/adminer:5",
}
PORT_KEYS = ("EXPOSE_POSTGRES_PORT", "EXPOSE_REDIS_PORT", "EXPOSE_SANDBOX_PORT", "EXPOSE_SSRF_PROXY_PORT",
             "EXPOSE_PLUGIN_DAEMON_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT", "EXPOSE_VIEWER_PORT",
             "DEV_API_PORT", "DEV_WEB_PORT")


@dataclass
class DevEnv:
    stack: str
    state: Path
    src: Path
    ports: dict[str, int]
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return f"{self.stack}-middleware"

    def env(self, **extra) -> dict[str, str | None]:
        """The variables the dev tasks run with here (None: removed)."""
        return {"INVOKE_DIFYOPS_DEV_DIR": str(self.state), "INVOKE_DIFYOPS_DEV_STACK": self.stack,
                "DIFY_SRC": str(self.src), "INVOKE_DIFYOPS_DIFY_REPO": "/nonexistent/dify.git",
                "INVOKE_DIFYOPS_DIFY_SRC": None, **self.extra_env, **extra}

    def invoke(self, *args: str, check: bool = True, timeout: int = 600, **extra) -> subprocess.CompletedProcess:
        return invoke("--search-root", str(ROOT), *args, check=check, timeout=timeout, env=self.env(**extra))

    def set_args(self) -> list[str]:
        args = []
        for key, value in {**LOCAL_IMAGES, **{k: str(v) for k, v in self.ports.items()}}.items():
            args += ["--set", f"{key}={value}"]
        return args

    def url(self, name: str, path: str = "/") -> str:
        key = {"api": "DEV_API_PORT", "web": "DEV_WEB_PORT", "viewer": "EXPOSE_VIEWER_PORT"}[name]
        return f"http://127.0.0.1:{self.ports[key]}{path}"

    def status(self) -> dict:
        return json.loads(self.invoke("dev.status", "--json").stdout)

    def containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                              "--format", "{{.Names}}"], capture_output=True, text=True)
        return out.stdout.split()

    def volumes(self) -> list[str]:
        """The project's named volumes (compose labels them; anonymous volumes have no such label)."""
        out = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
                             capture_output=True, text=True)
        return sorted(out.stdout.split())

    def anonymous_volumes(self) -> list[str]:
        """Anonymous volumes mounted by the project's containers, as `destination=name`."""
        found = []
        for name in self.containers():
            out = subprocess.run(["docker", "inspect", "-f", "{{json .Mounts}}", name], capture_output=True, text=True)
            for mount in json.loads(out.stdout or "null") or []:
                if mount.get("Type") == "volume" and not mount.get("Name", "").startswith(f"{self.project}_"):
                    found.append(f"{mount['Destination']}={mount['Name']}")
        return sorted(found)

    def tracked_pids(self) -> list[int]:
        pids = []
        for path in (self.state / "run").glob("*.json") if (self.state / "run").is_dir() else []:
            pids.append(json.loads(path.read_text())["pid"])
        return pids

    def cleanup(self) -> None:
        self.invoke("dev.stop", check=False, timeout=180)
        subprocess.run(["docker", "compose", "-f", str(ROOT / "compose" / "dev" / "middleware.yml"),
                        "--env-file", str(self.state / "middleware.env"), "-p", self.project,
                        "--profile", "viewer", "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                       capture_output=True, timeout=300)


def make_env(tmp: Path, name: str = "devt") -> DevEnv:
    stack = unique_name(name)
    src = fixture.build(tmp / "dify")
    return DevEnv(stack, tmp / "state", src, dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True)))
