"""`invoke ARGS` in the background with its stderr read line by line as it comes: a test acts
at a moment the task reports (a phase begun, a worker draining), then collects the result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

from .stacks import ROOT


class Streamed:
    """prod.upgrade in the background, its stderr read line by line (bounded by the timeout)."""

    def __init__(self, stack, *args: str, timeout: int = 900):
        env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(stack.env_file))  # stack: anything with an env_file
        self.proc = subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.out: list[str] = []
        self.seen = threading.Condition()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out = threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True)
        self._err.start()
        self._out.start()
        self.timeout = timeout

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            with self.seen:
                self.lines.append(line.rstrip("\n"))
                self.seen.notify_all()

    def wait_for_line(self, pattern: str, seconds: float) -> str | None:
        """The first stderr line matching `pattern` (a regex), waiting for it at most `seconds`."""
        found = re.compile(pattern)
        with self.seen:
            self.seen.wait_for(lambda: any(found.search(ln) for ln in self.lines) or self.proc.poll() is not None,
                               timeout=seconds)
            return next((ln for ln in self.lines if found.search(ln)), None)

    def finish(self) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.join(timeout=10)
        self._out.join(timeout=10)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "".join(self.out),
                                           "\n".join(self.lines))
