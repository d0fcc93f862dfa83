"""Swarm stack files (difyops/swarm.py), offline bundles (difyops/bundle.py) and the swarm tasks."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile

import pytest
from conftest import OK, commands, mock_context
from invoke import Result
from invoke.exceptions import Exit

from difyops import bundle, clusters, envfile, paths, swarm
from difyops.errors import DifyopsError
from difyops.tasks import prod as prod_tasks
from difyops.tasks import swarm as swarm_tasks

ENV = {"DB_PASSWORD": "p" * 32, "REDIS_PASSWORD": "r" * 32, "SECRET_KEY": "s" * 32}


def rendered(tmp_path, **service):
    conf = tmp_path / "templates"
    conf.mkdir()
    (conf / "a.conf.template").write_text("server {}\n")
    run = tmp_path / "10-run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    base = {
        "image": "x/api:1", "restart": "unless-stopped", "security_opt": ["no-new-privileges:true"],
        "environment": {"DB_PASSWORD": ENV["DB_PASSWORD"], "MODE": "api",
                        "CELERY_BROKER_URL": f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/1"},
        "healthcheck": {"test": ["CMD-SHELL", "curl -f localhost"], "interval": "5s"},
        "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080"}],
        "volumes": [{"type": "bind", "source": str(conf), "target": "/etc/t", "bind": {"create_host_path": True}},
                    {"type": "bind", "source": str(run), "target": "/d/10-run.sh"},
                    {"type": "volume", "source": "storage", "target": "/s", "volume": {}}],
        "deploy": {"replicas": 2, "resources": {"limits": {"cpus": 1.5}}, "placement": {}},
        "networks": {"app": None},
    }
    base.update(service)
    return {"name": "s-api", "services": {"api": base}, "networks": {"app": {"name": "s-app", "external": True}},
            "volumes": {"storage": {"name": "s-storage", "external": True}},
            swarm.HINTS_KEY: {"api": {"entrypoint": ["/bin/bash", "/entrypoint.sh"]}}}


def test_to_stack_moves_secrets_to_docker_secrets_and_wraps_entrypoint(tmp_path):
    out = swarm.to_stack(rendered(tmp_path), "s-api", ENV)
    text = out.dumps()
    for value in ENV.values():
        assert value not in text
    svc = out.stack["services"]["api"]
    assert svc["entrypoint"] == ["/bin/sh", swarm.SHIM_TARGET, "/bin/bash", "/entrypoint.sh"]
    assert {s["target"] for s in svc["secrets"]} == {"DB_PASSWORD", "CELERY_BROKER_URL"}
    assert svc["environment"] == {"MODE": "api"}
    assert svc["healthcheck"]["test"][:3] == ["CMD", "/bin/sh", swarm.SHIM_TARGET]
    assert sorted(out.secrets.values()) == sorted([ENV["DB_PASSWORD"], f"redis://:{ENV['REDIS_PASSWORD']}@redis:6379/1"])
    assert all(s["external"] for s in out.stack["secrets"].values())


def test_to_stack_turns_binds_into_configs_keeping_exec_bits(tmp_path):
    svc = swarm.to_stack(rendered(tmp_path), "s-api", ENV).stack["services"]["api"]
    targets = {c["target"]: c["mode"] for c in svc["configs"]}
    assert targets["/etc/t/a.conf.template"] == 0o444
    assert targets["/d/10-run.sh"] == 0o555
    assert targets[swarm.SHIM_TARGET] == 0o555
    assert svc["volumes"] == [{"type": "volume", "source": "storage", "target": "/s"}]


def test_to_stack_ports_limits_and_dropped_keys(tmp_path):
    out = swarm.to_stack(rendered(tmp_path), "s-api", dict(ENV, SWARM_PUBLISH_MODE="host"))
    svc = out.stack["services"]["api"]
    assert svc["ports"] == [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert svc["deploy"]["resources"]["limits"]["cpus"] == "1.5"
    assert "restart" not in svc and "security_opt" not in svc
    assert out.dropped == ["api: security_opt"]
    assert out.stack["version"] == swarm.STACK_FILE_VERSION


def test_to_stack_refuses_secret_left_in_command(tmp_path):
    doc = rendered(tmp_path, command=["redis-server", "--requirepass", ENV["REDIS_PASSWORD"]])
    with pytest.raises(DifyopsError, match="REDIS_PASSWORD outside a Docker secret"):
        swarm.to_stack(doc, "s-api", ENV)


def test_to_stack_refuses_secrets_without_a_way_in(tmp_path):
    doc = rendered(tmp_path)
    doc[swarm.HINTS_KEY] = {}
    with pytest.raises(DifyopsError, match="gets secrets"):
        swarm.to_stack(doc, "s-api", ENV)


def test_file_variables_use_the_images_own_file_support(tmp_path):
    doc = rendered(tmp_path, environment={"POSTGRES_PASSWORD": ENV["DB_PASSWORD"]}, healthcheck=None)
    doc[swarm.HINTS_KEY] = {"api": {"file_variables": ["POSTGRES_PASSWORD"]}}
    svc = swarm.to_stack(doc, "s-api", ENV).stack["services"]["api"]
    assert svc["environment"] == {"POSTGRES_PASSWORD_FILE": "/run/secrets/POSTGRES_PASSWORD"}
    assert "entrypoint" not in svc


def test_object_names_follow_content_and_fit_docker():
    a = swarm.object_name("stack", "x" * 100, b"one")
    assert len(a) <= 64 and a != swarm.object_name("stack", "x" * 100, b"two")


def test_converged_and_rolled_back():
    states = swarm.parse_service_ls("s_api\t2/2\ns_web\t1/1 (max 1 per node)\n")
    assert swarm.converged(states)
    states[0].update = "rollback_completed"
    assert not swarm.converged(states) and swarm.rolled_back(states) == ["s_api"]
    assert not swarm.converged(swarm.parse_service_ls("s_api\t1/2\n"))


def test_wait_converged_is_bounded(env_path):
    c = mock_context(env_path, {r"service ls": Result("s_api\t0/1\n"), r"service inspect": OK})
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(DifyopsError, match="did not converge within 30s"):
        swarm.wait_converged(c, "s", None, timeout=30, clock=lambda: next(ticks), sleep=lambda s: None)


def test_label_task_sets_role_labels_through_context(env_path):
    c = mock_context(env_path, {r"node update": OK})
    swarm_tasks.label(c, "node1", "data,gateway", context="prod")
    assert commands(c) == ["docker --context prod node update --label-add difyops.role.data=true "
                           "--label-add difyops.role.gateway=true node1"]


def test_label_task_refuses_unknown_role_and_runs_nothing(env_path):
    c = mock_context(env_path, {r".*": OK})
    with pytest.raises(Exit, match="roles must be"):
        swarm_tasks.label(c, "node1", "database")
    assert commands(c) == []


def test_deploy_swarm_refuses_when_not_a_manager_and_changes_nothing(env_path):
    c = mock_context(env_path, {r"docker --context m info": Result("active false\n"),
                                r"docker compose .* config": Result('{"services": {}}')})
    with pytest.raises(Exit, match="nothing was deployed"):
        prod_tasks.deploy(c, clusters="data", target="swarm", context="m")
    assert not [cmd for cmd in commands(c) if " create" in cmd or "stack deploy" in cmd]


def test_deploy_swarm_refuses_cluster_without_overlay(env_path, tmp_path, monkeypatch):
    monkeypatch.setattr(swarm, "SWARM_DIR", tmp_path)  # no overlay at all
    c = mock_context(env_path, {r".*": OK})
    with pytest.raises(Exit, match="no Swarm overlay"):
        prod_tasks.deploy(c, clusters="support", target="swarm")
    assert commands(c) == []


def test_required_roles_come_from_placement_constraints():
    doc = {"services": {
        "a": {"deploy": {"placement": {"constraints": ["node.labels.difyops.role.app == true"]}}},
        "b": {"deploy": {"placement": {"constraints": ["node.labels.difyops.role.data==true", "node.role == worker"]}}},
        "c": {"image": "x"},
    }}
    assert swarm.required_roles([swarm.StackFile(doc)]) == {"app", "data"}


def test_crowding_warns_only_where_replicas_share_a_node():
    lines = "s_api.1\tw1\ns_api.2\tw1\ns_web.1\tw1\ns_web.2\tw2\ns_nginx.1\tm\n"
    warnings = swarm.crowding(lines)
    assert len(warnings) == 1 and warnings[0].startswith("s_api: 2 of 2 replicas run on node w1")
    assert swarm.crowding("s_api.1\tw1\ns_api.2\tw2\n") == []


def test_deploy_swarm_refuses_unknown_role_from_env(env_path):
    stack = {"services": {"plugin_daemon": {"image": "x", "deploy": {
        "placement": {"constraints": ["node.labels.difyops.role.dta == true"]}}}}}
    c = mock_context(env_path, {r"docker compose .* config": Result(json.dumps(stack)),
                                r"docker --context m info": Result("active true\n"), r".*": OK})
    with pytest.raises(Exit, match="node role 'dta'"):
        prod_tasks.deploy(c, clusters="support", target="swarm", context="m")
    assert not [cmd for cmd in commands(c) if " create" in cmd or "stack deploy" in cmd]


def test_deploy_refuses_unknown_target_and_context_without_swarm(env_path):
    c = mock_context(env_path, {r".*": OK})
    with pytest.raises(Exit, match="unknown target"):
        prod_tasks.deploy(c, target="k8s")
    with pytest.raises(Exit, match="--context goes with --target swarm"):
        prod_tasks.deploy(c, context="prod")
    assert commands(c) == []


# ----------------------------------------------------------------------------- bundles


def make_bundle(tmp_path, image_id="sha256:" + "a" * 64, ref="x/y:1", tamper=None):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as saved:
        data = json.dumps([{"Config": f"blobs/sha256/{image_id.split(':')[1]}", "RepoTags": [ref]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        saved.addfile(info, io.BytesIO(data))
    images_bytes = inner.getvalue()
    images_sha, size = bundle.sha256_stream(io.BytesIO(images_bytes))
    manifest = json.dumps(bundle.manifest_doc([bundle.BundleImage(ref, image_id)], images_sha, size)).encode()
    manifest_sha, _ = bundle.sha256_stream(io.BytesIO(manifest))
    sums = bundle.sums_text({bundle.IMAGES: images_sha, bundle.MANIFEST: manifest_sha}).encode()
    members = {bundle.SUMS: sums, bundle.MANIFEST: manifest, bundle.IMAGES: images_bytes}
    if tamper:
        tamper(members)
    path = tmp_path / "b.tar"
    with tarfile.open(path, mode="w") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def test_bundle_verify_accepts_an_intact_bundle(tmp_path):
    manifest = bundle.verify(make_bundle(tmp_path))
    assert manifest["images"][0]["ref"] == "x/y:1"


def test_bundle_verify_refuses_altered_images(tmp_path):
    def flip(members):
        data = bytearray(members[bundle.IMAGES])
        data[10] ^= 1
        members[bundle.IMAGES] = bytes(data)
    with pytest.raises(DifyopsError, match="does not match its sha256"):
        bundle.verify(make_bundle(tmp_path, tamper=flip))


def test_bundle_verify_refuses_a_manifest_naming_another_image(tmp_path):
    def other(members):
        doc = json.loads(members[bundle.MANIFEST])
        doc["images"][0]["id"] = "sha256:" + "b" * 64
        members[bundle.MANIFEST] = json.dumps(doc).encode()
        sums = bundle.parse_sums(members[bundle.SUMS].decode())
        sums[bundle.MANIFEST] = bundle.sha256_stream(io.BytesIO(members[bundle.MANIFEST]))[0]
        members[bundle.SUMS] = bundle.sums_text(sums).encode()
    with pytest.raises(DifyopsError, match="does not hold that"):
        bundle.verify(make_bundle(tmp_path, tamper=other))


def test_bundle_verify_refuses_truncated_and_foreign_files(tmp_path):
    good = make_bundle(tmp_path)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(DifyopsError):
        bundle.verify(cut)
    foreign = tmp_path / "f.tar"
    with tarfile.open(foreign, mode="w") as out:
        info = tarfile.TarInfo("hello.txt")
        out.addfile(info, io.BytesIO(b""))
    with pytest.raises(DifyopsError, match="not a difyops image bundle"):
        bundle.verify(foreign)


# ----------------------------------------------------------------------------- the real overlays

HAS_COMPOSE = shutil.which("docker") is not None and subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode == 0


def render_for_swarm(tmp_path, cluster: str, **overrides: str) -> tuple[swarm.StackFile, dict[str, str]]:
    env_file = tmp_path / ".env"
    env_file.write_text(envfile.generate(paths.ENV_EXAMPLE.read_text(), {"DIFYOPS_STACK": "u", **overrides}))
    env = envfile.read(env_file)
    argv = ["docker", "compose", "-f", str(clusters.CLUSTERS[cluster].file), "-f",
            str(swarm.overlay_file(clusters.CLUSTERS[cluster])), "--env-file", str(env_file), "config", "--format", "json"]
    result = subprocess.run(argv, capture_output=True, text=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DIFYOPS_ENV_FILE": str(env_file)})
    assert result.returncode == 0, result.stderr
    return swarm.to_stack(json.loads(result.stdout), f"u-{cluster}", env), env


@pytest.mark.skipif(not HAS_COMPOSE, reason="needs the docker compose CLI (no daemon); runs in CI, where "
                                            ".ci/run installs it")
@pytest.mark.parametrize("name", list(clusters.CLUSTERS))
def test_every_cluster_becomes_a_stack_with_no_secret_in_the_clear(name, tmp_path):
    stack_file, env = render_for_swarm(tmp_path, name)
    text = stack_file.dumps()
    for value, key in swarm.secret_values(env).items():
        assert value not in text, f"{key} in the clear"
    for service, svc in stack_file.stack["services"].items():
        assert (svc.get("deploy") or {}).get("placement", {}).get("constraints"), f"{service} has no placement"


@pytest.mark.skipif(not HAS_COMPOSE, reason="needs the docker compose CLI (no daemon); runs in CI, where "
                                            ".ci/run installs it")
def test_support_on_swarm_runs_the_images_own_start_commands_through_the_shim(tmp_path):
    stack_file, _ = render_for_swarm(tmp_path, "support")
    services = stack_file.stack["services"]
    shim = ["/bin/sh", swarm.SHIM_TARGET]
    assert services["sandbox"]["entrypoint"] == [*shim, "/entrypoint.sh"]
    assert services["plugin_daemon"]["entrypoint"] == [*shim, "/bin/bash", "-c", "/app/entrypoint.sh"]
    assert {s["target"] for s in services["sandbox"]["secrets"]} == {"API_KEY"}
    assert {"DB_PASSWORD", "SERVER_KEY", "DIFY_INNER_API_KEY"} <= {s["target"] for s in services["plugin_daemon"]["secrets"]}
    # The plugin daemon stays with its node-local volume (data) unless told otherwise.
    assert swarm.required_roles([stack_file]) == {"app", "data"}
    assert services["plugin_daemon"]["deploy"]["update_config"]["order"] == "stop-first"
    moved, _ = render_for_swarm(tmp_path, "support", PLUGIN_DAEMON_SWARM_ROLE="app")
    assert swarm.required_roles([moved]) == {"app"}
    # squid's files travel as configs (the node has no checkout), the entrypoint keeps its exec bit.
    targets = {cfg["target"]: cfg["mode"] for cfg in services["ssrf_proxy"]["configs"]}
    assert "/etc/squid/squid.conf.template" in targets and "/difyops/docker-entrypoint.sh" in targets


def test_prod_status_target_swarm_reads_the_stacks_through_the_context(env_path):
    c = mock_context(env_path, {r"service ls": Result("unit-api_api\t2/2\n"),
                                r"service inspect": Result("completed\n"), r".*": OK})
    prod_tasks.status(c, clusters="api", target="swarm", context="m")
    ran = commands(c)
    assert ran and all(cmd.startswith("docker --context m service") for cmd in ran)
    assert any("com.docker.stack.namespace=unit-api" in cmd for cmd in ran)
    with pytest.raises(Exit, match="--context goes with --target swarm"):
        prod_tasks.status(c, context="m")
