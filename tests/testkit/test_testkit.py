"""The shared test helpers themselves (no Docker): the CI-failing skip, the status reader (its JSON,
and the table it falls back to only outside CI), what counts as healthy, and the leftover watch's
reading of Docker events. `nox -s tests` runs these."""

from __future__ import annotations

import json
import subprocess

import pytest

from testkit import healthy, prod_status, require, row_of
from testkit.leftovers import Watch
from testkit.names import owns, unique_name

TABLE = """\
                       stack s1
┏━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ cluster ┃ service     ┃ state   ┃ health            ┃ replicas ┃ ports                    ┃
┡━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ data    │ db_postgres │ running │ healthy           │ 1/1      │                          │
│ api     │ api         │ running │ unhealthy         │ 1/1      │                          │
│ web     │ web         │ running │ healthy,unhealthy │ 2/2      │                          │
│ gateway │ nginx       │ running │ healthy           │ 1/1      │ 127.0.0.1:8080->80       │
└─────────┴─────────────┴─────────┴───────────────────┴──────────┴──────────────────────────┘
"""


def runner(json_result: subprocess.CompletedProcess, table: str = TABLE):
    def run(*args, check=True):
        return json_result if "--json" in args else subprocess.CompletedProcess(args, 0, table, "")
    return run


def test_require_skips_outside_ci_and_fails_under_ci(monkeypatch):
    require(True, "never seen", "anywhere")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool is missing; this check runs in nox -s tests"):
        require(False, "promtool is missing", "nox -s tests")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(None, "promtool is missing", "nox -s tests")


def test_prod_status_reads_the_json():
    rows = [{"cluster": "api", "service": "api", "state": "running", "health": "healthy",
             "replicas": {"running": 2, "total": 2}, "ports": []}]
    got = prod_status(runner(subprocess.CompletedProcess([], 0, json.dumps(rows), "")))
    assert got == rows and healthy(row_of(got, "api"), replicas=2)
    assert not healthy(row_of(got, "api"), replicas=1)


def test_prod_status_refuses_output_that_is_not_its_json():
    with pytest.raises(AssertionError, match="printed no JSON"):
        prod_status(runner(subprocess.CompletedProcess([], 0, "a table", "")))
    with pytest.raises(AssertionError, match="failed"):
        prod_status(runner(subprocess.CompletedProcess([], 1, "", "error: no .env")))


def test_without_json_the_table_is_read_outside_ci_and_refused_under_ci(monkeypatch):
    unknown = subprocess.CompletedProcess([], 1, "", "No idea what '--json' is!")
    monkeypatch.delenv("CI", raising=False)
    rows = prod_status(runner(unknown))
    assert [r["service"] for r in rows] == ["db_postgres", "api", "web", "nginx"]
    assert row_of(rows, "nginx")["ports"] == ["127.0.0.1:8080->80"]
    # "healthy" is a substring of "unhealthy": the rows are told apart by their values, not by search.
    assert [healthy(r) for r in rows] == [True, False, False, True]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(AssertionError, match="never its table"):
        prod_status(runner(unknown))


def test_healthy_needs_every_replica_up_and_healthy():
    base = {"state": "running", "health": "healthy", "replicas": {"running": 2, "total": 2}}
    assert healthy(base)
    assert not healthy({**base, "health": ["healthy", "starting"]})
    assert not healthy({**base, "replicas": {"running": 1, "total": 2}})
    assert not healthy({**base, "state": "exited", "replicas": {"running": 0, "total": 0}})
    assert row_of([base], "missing") == {}


def test_names_are_recorded_and_owned(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFYOPS_TEST_NAMES", str(tmp_path / "names"))
    name = unique_name("smoke")
    assert (tmp_path / "names").read_text().split() == [name]
    assert owns([name], name) and owns([name], f"{name}-data-redis-1") and owns([name], f"{name}_pgdata")
    assert not owns([name], f"{name}tls") and not owns([name], f"x{name}-data")


def test_the_watch_owns_the_anonymous_volumes_of_its_containers(tmp_path):
    watch = Watch(tmp_path)
    watch.names_file.write_text("ha123456\n")

    def event(kind, action, actor, **attrs):
        return json.dumps({"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attrs}})

    watch.events_file.write_text("\n".join([
        event("volume", "create", "a" * 64),
        event("container", "create", "c1", name="ha123456-data-redis-sentinel-1-1"),
        event("volume", "mount", "a" * 64, container="c1", destination="/data"),
        event("volume", "create", "b" * 64),  # another session's container mounts this one
        event("container", "create", "c2", name="someone-else"),
        event("volume", "mount", "b" * 64, container="c2", destination="/data"),
        event("container", "create", "c3", name="frosty_curie", **{"io.difyops.stack": "ha123456"}),
        event("volume", "create", "c" * 64),
        event("volume", "mount", "c" * 64, container="c3", destination="/x"),
        # a container created and never started: its volume, made just before it, has no mount event
        event("volume", "create", "d" * 64),
        event("container", "create", "c4", name="ha123456-data-redis-sentinel-2-1"),
        event("volume", "create", "e" * 64),
        event("container", "create", "c5", name="someone-else-2"),
        "not json",
    ]) + "\n")
    assert watch.own_volumes_seen(watch.names()) == {"a" * 64, "c" * 64, "d" * 64}
