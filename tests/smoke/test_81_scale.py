"""Smoke: prod.scale changes replica counts that prod.status shows and that serve traffic, and a
worker group split by queue takes its queues' tasks. Runs on the shared stack and leaves it at one
replica each, with the dataset worker group running."""

from __future__ import annotations

import subprocess
import time

import requests
from smokelib import check


def status_row(stack, service: str) -> str:
    out = stack.invoke("prod.status").stdout
    rows = [ln for ln in out.splitlines() if f" {service} " in ln]
    return rows[0] if rows else ""


def test_scale_changes_replicas_prod_status_shows(stack):
    stack.invoke("prod.scale", "api=2,web=2,worker=2")
    for service in ("api", "web", "worker"):
        row = status_row(stack, service)
        check(f"prod.status shows 2 {service} replicas", "2/2" in row and "healthy" in row, row)
    hosts = {requests.get(stack.base + "/v1/ping", timeout=10).json()["hostname"] for _ in range(20)}
    check("both api replicas answer through the gateway", len(hosts) == 2, sorted(hosts))
    history = stack.invoke("prod.history").stdout
    check("the scaling is in the history", "scale" in history and "api=2" in history, history[-400:])
    stack.invoke("prod.scale", "api=1 web=1 worker=1")
    row = status_row(stack, "api")
    check("scaling back to 1 shows 1/1", "1/1" in row, row)


def test_scale_refuses_bad_input(stack):
    for bad, expected in (("api=x", "whole number"), ("db=2", "is not KEY=N"), ("api=0", "at least one")):
        result = stack.invoke("prod.scale", bad, check=False)
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        check(f"prod.scale {bad} is refused with one line", result.returncode != 0 and len(lines) == 1
              and expected in lines[0], lines)


def test_worker_group_takes_its_queues(stack):
    with open(stack.env_file, "a") as env:
        env.write("WORKER_GROUPS=dataset\n"
                  "WORKER_DATASET_QUEUES=dataset,priority_dataset,pipeline,priority_pipeline\n"
                  "WORKER_DATASET_AMOUNT=2\n")
    stack.invoke("prod.up", "worker")
    row = status_row(stack, "worker_dataset")
    check("prod.status shows the dataset worker group healthy", "healthy" in row and "1/1" in row, row)
    group_hosts = subprocess.run(
        ["docker", "ps", "--filter", f"label=com.docker.compose.project={stack.name}-worker_dataset",
         "--format", "{{.ID}}"], capture_output=True, text=True, check=True).stdout.split()
    results = {}
    for queue in ("dataset", "mail"):
        task_id = requests.post(stack.base + "/v1/tasks", json={"input": queue, "queue": queue},
                                timeout=10).json()["task_id"]
        deadline = time.monotonic() + 60
        state = {}
        while time.monotonic() < deadline:
            state = requests.get(stack.base + f"/v1/tasks/{task_id}", timeout=10).json()
            if state.get("state") in ("SUCCESS", "FAILURE"):
                break
            time.sleep(0.5)
        results[queue] = (state.get("state"), state.get("worker"))
    in_group = lambda worker: any(h and h in str(worker) for h in group_hosts)  # noqa: E731
    check("a dataset task runs on the dataset group", results["dataset"][0] == "SUCCESS"
          and in_group(results["dataset"][1]), {"results": results, "group": group_hosts})
    check("a mail task runs on the main worker, not the group", results["mail"][0] == "SUCCESS"
          and not in_group(results["mail"][1]), {"results": results, "group": group_hosts})
    concurrency = subprocess.run(["docker", "exec", f"{stack.name}-worker_dataset-worker-1", "sh", "-c",
                                  "tr '\\0' ' ' </proc/1/cmdline"], capture_output=True, text=True).stdout
    check("the group runs with its own concurrency and queues", "-c 2" in concurrency
          and "-Q dataset,priority_dataset,pipeline,priority_pipeline" in concurrency, concurrency.strip())
    stack.invoke("prod.scale", "worker_dataset=2")
    row = status_row(stack, "worker_dataset")
    check("prod.scale scales a worker group", "2/2" in row, row)
