"""Smoke: prod.scale changes replica counts that prod.status shows and that serve traffic, and a
worker group split by queue takes its queues' tasks while the main worker takes every other queue
of the release (workflow runs, summaries). Runs on the shared stack and leaves it at one replica
each, with the dataset worker group running."""

from __future__ import annotations

import json
import subprocess
import time

import requests
from testkit import check, healthy, prod_status, row_of


def wait_task(stack, path: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    state = {}
    while time.monotonic() < deadline:
        state = requests.get(stack.base + path, timeout=10).json()
        if state.get("state") in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.5)
    return state


def status_row(stack, service: str) -> dict:
    """The service's row of `prod.status --json` ({} when it has none)."""
    return row_of(prod_status(stack.invoke), service)


def shown(row: dict):
    return (row.get("state"), row.get("health"), row.get("replicas")) if row else "no row"


def last_history(stack) -> dict:
    lines = [ln for ln in stack.invoke("prod.history", "--json", "--limit", "1").stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def test_scale_changes_replicas_prod_status_shows(stack):
    stack.invoke("prod.scale", "api=2,web=2,worker=2")
    for service in ("api", "web", "worker"):
        row = status_row(stack, service)
        check(f"prod.status --json shows 2 {service} replicas, both healthy", healthy(row, replicas=2), shown(row))
    hosts = {requests.get(stack.base + "/v1/ping", timeout=10).json()["hostname"] for _ in range(20)}
    check("both api replicas answer through the gateway", len(hosts) == 2, sorted(hosts))
    last = last_history(stack)
    check("the scaling is the last entry of the history, with its counts", last.get("action") == "scale"
          and last.get("result") == "ok" and last.get("replicas") == {"api": 2, "web": 2, "worker": 2},
          {k: last.get(k) for k in ("action", "result", "replicas")})
    stack.invoke("prod.scale", "api=1 web=1 worker=1")
    rows = prod_status(stack.invoke)
    back = {service: row_of(rows, service) for service in ("api", "web", "worker")}
    check("scaling back to 1 shows one healthy replica each", all(healthy(r, replicas=1) for r in back.values()),
          {s: shown(r) for s, r in back.items()})


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
    check("prod.status --json shows the dataset worker group running, healthy, 1/1", healthy(row, replicas=1),
          shown(row))
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
    # Since Dify 1.13 workflow and chatflow runs are tasks on workflow_based_app_execution, and
    # summary indexes on dataset_summary: with a group taking the indexing queues, the main worker
    # must still take them (else they wait forever).
    run = requests.post(stack.base + "/v1/workflows/run", json={"inputs": {"q": "groups"}, "seconds": 1},
                        timeout=10).json()
    summary = requests.post(stack.base + "/console/api/datasets/d1/summaries", json={"text": "a b c " * 20},
                            timeout=10).json()
    ran = wait_task(stack, f"/v1/workflows/run/{run['workflow_run_id']}")
    summed = wait_task(stack, f"/console/api/tasks/{summary['task_id']}")
    check("a workflow run (workflow_based_app_execution) completes on the main worker with worker groups on",
          ran.get("state") == "SUCCESS" and ran.get("queue") == "workflow_based_app_execution"
          and not in_group(ran.get("worker")), {k: ran.get(k) for k in ("state", "queue", "worker")})
    check("a summary (dataset_summary) completes on the main worker with worker groups on",
          summed.get("state") == "SUCCESS" and summed.get("queue") == "dataset_summary"
          and not in_group(summed.get("worker")), {k: summed.get(k) for k in ("state", "queue", "worker")})
    concurrency = subprocess.run(["docker", "exec", f"{stack.name}-worker_dataset-worker-1", "sh", "-c",
                                  "tr '\\0' ' ' </proc/1/cmdline"], capture_output=True, text=True).stdout
    check("the group runs with its own concurrency and queues", "-c 2" in concurrency
          and "-Q dataset,priority_dataset,pipeline,priority_pipeline" in concurrency, concurrency.strip())
    stack.invoke("prod.scale", "worker_dataset=2")
    row = status_row(stack, "worker_dataset")
    check("prod.scale scales a worker group (2 healthy replicas)", healthy(row, replicas=2), shown(row))
