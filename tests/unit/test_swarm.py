"""Swarm stack files (difyops/swarm.py), offline bundles (difyops/bundle.py) and the swarm tasks."""

from __future__ import annotations

import io
from pathlib import Path
import json
import subprocess
import tarfile

import compose_cli
import pytest
from conftest import OK, commands, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import bundle, clusters, digests, dotenv, envfile, paths, release_sets, swarm
from difyops import rollout_release as rr
from difyops.config import load_settings
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
            "volumes": {"storage": {"name": "s-storage", "external": True}}}


# What `docker image inspect` says of x/api:1: Dify's api image has only an ENTRYPOINT.
START = {"x/api:1": (["/bin/bash", "/entrypoint.sh"], [])}


def test_to_stack_moves_secrets_to_docker_secrets_and_wraps_entrypoint(tmp_path):
    out = swarm.to_stack(rendered(tmp_path), "s-api", ENV, start=START)
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
    svc = swarm.to_stack(rendered(tmp_path), "s-api", ENV, start=START).stack["services"]["api"]
    targets = {c["target"]: c["mode"] for c in svc["configs"]}
    assert targets["/etc/t/a.conf.template"] == 0o444
    assert targets["/d/10-run.sh"] == 0o555
    assert targets[swarm.SHIM_TARGET] == 0o555
    assert svc["volumes"] == [{"type": "volume", "source": "storage", "target": "/s"}]


def test_to_stack_ports_limits_and_dropped_keys(tmp_path):
    out = swarm.to_stack(rendered(tmp_path), "s-api", dict(ENV, SWARM_PUBLISH_MODE="host"), start=START)
    svc = out.stack["services"]["api"]
    assert svc["ports"] == [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert svc["deploy"]["resources"]["limits"]["cpus"] == "1.5"
    assert "restart" not in svc and "security_opt" not in svc
    assert out.dropped == ["api: security_opt"]
    assert out.stack["version"] == swarm.STACK_FILE_VERSION


@pytest.mark.parametrize("mode, order", [("host", "stop-first"), ("ingress", "start-first")])
def test_to_stack_replaces_a_host_mode_published_service_stop_first(tmp_path, mode, order):
    # A start-first task cannot bind a host-mode port its old task holds on the node: it stays
    # pending ("host-mode port already in use on 1 node") and the gateway's update never ends.
    update = {"parallelism": 1, "order": "start-first", "failure_action": "rollback"}
    doc = rendered(tmp_path, deploy={"replicas": 1, "update_config": dict(update),
                                     "rollback_config": {"parallelism": 1, "order": "start-first"}})
    deploy = swarm.to_stack(doc, "s-gw", dict(ENV, SWARM_PUBLISH_MODE=mode), start=START).stack["services"]["api"]["deploy"]
    assert deploy["update_config"] == {**update, "order": order}
    assert deploy["rollback_config"]["order"] == order
    (tmp_path / "u").mkdir()
    unpublished = rendered(tmp_path / "u", ports=[], deploy={"update_config": dict(update)})
    svc = swarm.to_stack(unpublished, "s-api", dict(ENV, SWARM_PUBLISH_MODE="host"), start=START).stack["services"]["api"]
    assert svc["deploy"]["update_config"]["order"] == "start-first"


def test_to_stack_refuses_secret_left_in_command(tmp_path):
    doc = rendered(tmp_path, command=["redis-server", "--requirepass", ENV["REDIS_PASSWORD"]])
    with pytest.raises(DifyopsError, match="REDIS_PASSWORD outside a Docker secret"):
        swarm.to_stack(doc, "s-api", ENV, start=START)


def test_to_stack_refuses_secrets_when_the_images_start_command_was_not_read(tmp_path):
    with pytest.raises(DifyopsError, match="ENTRYPOINT and CMD of its image x/api:1 were not read"):
        swarm.to_stack(rendered(tmp_path), "s-api", ENV)


@pytest.mark.parametrize("start, service, expected", [
    # plugin daemon 0.5.3-local: no ENTRYPOINT, CMD runs /app/entrypoint.sh
    (([], ["/bin/bash", "-c", "/app/entrypoint.sh"]), {},
     ["/bin/bash", "-c", "/app/entrypoint.sh"]),
    # plugin daemon 0.6.x: ENTRYPOINT tini, CMD migrates then starts /app/main (no /app/entrypoint.sh)
    ((["/usr/bin/tini", "-g", "--"], ["/bin/bash", "-c", "/app/commandline migrate && exec /app/main"]), {},
     ["/usr/bin/tini", "-g", "--", "/bin/bash", "-c", "/app/commandline migrate && exec /app/main"]),
    # a service command replaces the image's CMD and stays the container's args
    ((["docker-entrypoint.sh"], ["redis-server"]), {"command": ["/bin/sh", "-c", "exec redis-server"]},
     ["docker-entrypoint.sh"]),
    # a service entrypoint is what runs (Docker drops the image's CMD then)
    ((["/ignored"], ["ignored"]), {"entrypoint": ["/own.sh"]}, ["/own.sh"]),
])
def test_the_shim_runs_what_the_container_would_have_run(tmp_path, start, service, expected):
    svc = swarm.to_stack(rendered(tmp_path, **service), "s-api", ENV, start={"x/api:1": start}).stack["services"]["api"]
    assert svc["entrypoint"] == ["/bin/sh", swarm.SHIM_TARGET, *expected]
    assert svc.get("command") == service.get("command")


def test_an_image_with_nothing_to_start_is_refused(tmp_path):
    with pytest.raises(DifyopsError, match="has neither ENTRYPOINT nor CMD"):
        swarm.to_stack(rendered(tmp_path), "s-api", ENV, start={"x/api:1": ([], [])})


def test_an_entrypoint_hint_in_compose_swarm_is_refused(tmp_path):
    doc = rendered(tmp_path)
    doc[swarm.HINTS_KEY] = {"api": {"entrypoint": ["/bin/bash", "/entrypoint.sh"]}}
    with pytest.raises(DifyopsError, match="entrypoint is not read any more"):
        swarm.to_stack(doc, "s-api", ENV, start=START)


def test_start_commands_come_from_the_image_on_the_manager(env_path):
    c = mock_context(env_path, {r"image inspect .*plugin-daemon:0.6.10-local":
                                Result('["/usr/bin/tini","-g","--"] ["/bin/bash","-c","/app/commandline migrate && exec /app/main"]\n'),
                                r"image inspect .*dify-api": Result('["/bin/bash","/entrypoint.sh"] null\n')})
    got = swarm.start_commands(c, "m", ["langgenius/dify-plugin-daemon:0.6.10-local", "x/dify-api:2"], {})
    assert got == {"langgenius/dify-plugin-daemon:0.6.10-local":
                   (["/usr/bin/tini", "-g", "--"], ["/bin/bash", "-c", "/app/commandline migrate && exec /app/main"]),
                   "x/dify-api:2": (["/bin/bash", "/entrypoint.sh"], [])}
    assert commands(c)[0].startswith("docker --context m image inspect --format")


def test_start_commands_of_an_image_not_on_the_manager(env_path):
    c = mock_context(env_path, {r"image inspect": Result(stderr="No such image", exited=1)})
    # the release's own image: what its Dockerfile says (the release set)
    daemon = release_sets.default().image("plugin_daemon")  # the catalogue's pin and recorded start command
    got = swarm.start_commands(c, None, [daemon.ref], {})
    assert got == {daemon.ref: (list(daemon.entrypoint), list(daemon.command))}
    with pytest.raises(DifyopsError, match="image my/daemon:9 is not on the Swarm manager"):
        swarm.start_commands(c, None, ["my/daemon:9"], {})


def test_file_variables_use_the_images_own_file_support(tmp_path):
    doc = rendered(tmp_path, environment={"POSTGRES_PASSWORD": ENV["DB_PASSWORD"]}, healthcheck=None)
    doc[swarm.HINTS_KEY] = {"api": {"file_variables": ["POSTGRES_PASSWORD"]}}
    svc = swarm.to_stack(doc, "s-api", ENV, start=START).stack["services"]["api"]
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
    monkeypatch.setattr(clusters, "SWARM_DIR", tmp_path)  # no overlay at all
    c = mock_context(env_path, {})
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
    images_sha, size = digests.stream_sha256(io.BytesIO(images_bytes))
    manifest = json.dumps(bundle.manifest_doc([bundle.BundleImage(ref, image_id)], images_sha, size)).encode()
    manifest_sha, _ = digests.stream_sha256(io.BytesIO(manifest))
    sums = digests.sums_text({bundle.IMAGES: images_sha, bundle.MANIFEST: manifest_sha}).encode()
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
        sums = digests.parse_sums(members[bundle.SUMS].decode())
        sums[bundle.MANIFEST] = digests.stream_sha256(io.BytesIO(members[bundle.MANIFEST]))[0]
        members[bundle.SUMS] = digests.sums_text(sums).encode()
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

def compose_config(tmp_path, cluster: str, **overrides: str) -> tuple[str, Path]:
    """`docker compose config` of a cluster as the Swarm renderer runs it (swarm.render_argv), for
    real (the Compose CLI, no daemon), and the .env it read."""
    compose_cli.require_compose()
    env_file = tmp_path / ".env"
    dotenv.write_private(env_file, envfile.generate(paths.ENV_EXAMPLE.read_text(), {"DIFYOPS_STACK": "u", **overrides}))
    settings = load_settings(None, env_file)
    result = subprocess.run(swarm.render_argv(settings, clusters.CLUSTERS[cluster]), capture_output=True, text=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock",
                                 **swarm.render_env(settings, clusters.CLUSTERS[cluster])})
    assert result.returncode == 0, result.stderr
    return result.stdout, env_file


def render_for_swarm(tmp_path, cluster: str, **overrides: str) -> tuple[swarm.StackFile, dict[str, str]]:
    """A cluster rendered by the real Compose CLI through the one renderer (swarm.render_argv)."""
    text, env_file = compose_config(tmp_path, cluster, **overrides)
    settings = load_settings(None, env_file)
    doc = json.loads(text)
    # as the manager would answer `docker image inspect` for the official images of the release
    start = {img.ref: (list(img.entrypoint), list(img.command))
             for img in release_sets.for_env(settings.env).images.values()}
    start["redis:6-alpine"] = (["docker-entrypoint.sh"], ["redis-server"])
    assert set(swarm.shimmed_images(doc, settings.env)) <= set(start)
    return swarm.to_stack(doc, f"u-{cluster}", settings.env, start=start), settings.env


def test_swarm_renders_a_cluster_as_compose_does_https_published_and_the_size_preset_applied(tmp_path):
    stack_file, _ = render_for_swarm(tmp_path, "gateway", NGINX_HTTPS_ENABLED="true", EXPOSE_NGINX_SSL_PORT="8443",
                                     DIFYOPS_SIZE="small")
    nginx = stack_file.stack["services"]["nginx"]
    assert {(p["published"], p["target"]) for p in nginx["ports"]} == {(80, 80), (8443, 443)}, nginx["ports"]
    small = envfile.read(clusters.paths.COMPOSE_DIR / "sizes" / "small.env")
    limits = nginx["deploy"]["resources"]["limits"]
    assert str(limits["memory"]) in (small["NGINX_MEM_LIMIT"], _bytes(small["NGINX_MEM_LIMIT"])), limits
    assert limits["cpus"] == small["NGINX_CPU_LIMIT"]
    assert nginx["deploy"]["placement"]["constraints"] == ["node.labels.difyops.role.gateway == true"]


def _bytes(size: str) -> str:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return str(int(size[:-1]) * units[size[-1].lower()]) if size[-1].lower() in units else size


def test_the_ha_data_layer_and_weaviate_are_refused_on_swarm_before_anything_renders(env_path):
    write_env(env_path, DIFYOPS_STACK="unit", DIFYOPS_DATA_HA="true", VECTOR_STORE="weaviate")
    problems = swarm.unsupported_problems(load_settings(mock_context(env_path, {})).env)
    assert [p.split(":")[0] for p in problems] == ["DIFYOPS_DATA_HA=true", "VECTOR_STORE=weaviate"]
    c = mock_context(env_path, {r"docker info": Result("active true\n"), r"docker node ls": Result("n1\n"),
                                r"docker node inspect": Result('{"difyops.role.data": "true"}\n')})
    with pytest.raises(Exit, match=r"pre-flight found 2 problems"):
        prod_tasks.deploy(c, target="swarm")
    assert not [cmd for cmd in commands(c) if "docker compose" in cmd]  # refused before rendering


@pytest.mark.parametrize("name", list(clusters.CLUSTERS))
def test_every_cluster_becomes_a_stack_with_no_secret_in_the_clear(name, tmp_path):
    stack_file, env = render_for_swarm(tmp_path, name)
    text = stack_file.dumps()
    for value, key in swarm.secret_values(env).items():
        assert value not in text, f"{key} in the clear"
    for service, svc in stack_file.stack["services"].items():
        assert (svc.get("deploy") or {}).get("placement", {}).get("constraints"), f"{service} has no placement"


def test_support_on_swarm_runs_the_images_own_start_commands_through_the_shim(tmp_path):
    stack_file, _ = render_for_swarm(tmp_path, "support")
    services = stack_file.stack["services"]
    shim = ["/bin/sh", swarm.SHIM_TARGET]
    assert services["sandbox"]["entrypoint"] == [*shim, "/entrypoint.sh"]
    # The plugin daemon of the default release (0.6.3: tini, then `commandline migrate && exec main`).
    daemon = release_sets.default().image("plugin_daemon")
    assert services["plugin_daemon"]["entrypoint"] == [*shim, *daemon.start_command]
    assert services["plugin_daemon"]["image"] == daemon.ref
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


def test_swarm_renders_the_release_of_dify_version_with_its_own_images_and_services(tmp_path):
    """DIFY_VERSION=1.13.3: every Dify image of that release set (plugin daemon 0.5.3, its own start
    command), none of a later release's services; 1.16.1 (the default): its agent services too."""
    old = release_sets.load("1.13.3")
    support, _ = render_for_swarm(tmp_path, "support", DIFY_VERSION="1.13.3")
    services = support.stack["services"]
    assert set(services) == set(release_sets.services_in(old, "support")), sorted(services)
    assert services["plugin_daemon"]["image"] == old.image("plugin_daemon").ref
    assert services["plugin_daemon"]["entrypoint"] == ["/bin/sh", swarm.SHIM_TARGET, "/bin/bash", "-c",
                                                       "/app/entrypoint.sh"]
    api, _ = render_for_swarm(tmp_path, "api", DIFY_VERSION="1.13.3")
    assert set(api.stack["services"]) == {"api"} and api.stack["services"]["api"]["image"] == old.image("api").ref
    new, _ = render_for_swarm(tmp_path, "support")
    assert set(release_sets.services_in(release_sets.default(), "support")) <= set(new.stack["services"])
    assert "agent-sandbox" in str(new.stack["networks"]) and "agent-egress" in str(new.stack["networks"])


def test_prod_status_target_swarm_reads_the_stacks_through_the_context(env_path):
    c = mock_context(env_path, {r"service ls": Result("unit-api_api\t2/2\n"),
                                r"service inspect": Result("completed\n"), r".*": OK})
    prod_tasks.status(c, clusters="api", target="swarm", context="m")
    ran = commands(c)
    assert ran and all(cmd.startswith("docker --context m service") for cmd in ran)
    assert any("com.docker.stack.namespace=unit-api" in cmd for cmd in ran)
    with pytest.raises(Exit, match="--context goes with --target swarm"):
        prod_tasks.status(c, context="m")


def test_storage_is_given_on_every_ready_app_node_then_the_one_shot_goes(env_path):
    compose = {"services": {"init_permissions": {
        "image": "x/api:1", "user": "0:0", "entrypoint": ["/bin/sh", "-c"], "command": ["find ..."],
        "environment": {"DIFYOPS_STORAGE_OWNER": "1001:1001"},
        "volumes": [{"type": "volume", "source": "storage", "target": "/app/api/storage"}],
        "deploy": {"placement": {"constraints": ["node.labels.difyops.role.app == true"]}}}},
        "volumes": {"storage": {"name": "unit-storage", "external": True}}}
    c = mock_context(env_path, {r"docker compose .*--profile init config": Result(json.dumps(compose)),
                                r"node ls": Result("Ready Active\nReady Active\nDown Active\n"),
                                r"service ps": Result("Complete 2 seconds ago|\nComplete 3 seconds ago|\n"),
                                r"service logs": Result("storage volume: 0 entries given to 1001:1001\n"),
                                r"service ls": Result(""), r".*": OK})
    swarm.ensure_owners(c, load_settings(c), "m", timeout=30, poll=0)
    ran = commands(c)
    deployed = next(call for call in c.run.call_args_list if "stack deploy" in call.args[0])
    spec = json.loads(deployed.kwargs["in_stream"].read())["services"]["init_permissions"]
    assert spec["deploy"]["replicas"] == 2 and spec["deploy"]["placement"]["max_replicas_per_node"] == 1
    assert spec["deploy"]["restart_policy"] == {"condition": "none"} and spec["user"] == "0:0"
    assert "node.label=difyops.role.app=true" in next(cmd for cmd in ran if "node ls" in cmd)
    assert ran[-1] == "docker --context m stack rm unit-init"  # never left running


def test_routes_are_switched_by_a_one_shot_beside_the_gateway_on_every_gateway_node(tmp_path):
    from difyops.swarm import jobs

    text, env_file = compose_config(tmp_path, "gateway", DIFY_VERSION="1.13.3")
    gateway, _ = render_for_swarm(tmp_path, "gateway", DIFY_VERSION="1.13.3")
    c = mock_context(env_file, {r"docker compose .* config": Result(text),
                                r"node ls": Result("Ready Active\n"),
                                r"service ps": Result("Complete 1 second ago|\n"),
                                r"service logs": Result("the gateway here applied /etc/nginx/difyops-routes/routes.env\n"),
                                r"service ls": Result(""), r".*": OK})
    switches = {"NGINX_SOCKET_IO_UPSTREAM": ("api:5001", "api_websocket:5001")}
    jobs.switch_routes(c, load_settings(c), "m", switches, timeout=30, poll=0)
    deployed = next(call for call in c.run.call_args_list if "stack deploy" in call.args[0])
    stack = json.loads(deployed.kwargs["in_stream"].read())
    job = stack["services"]["nginx"]
    # beside the gateway, not in its place: no published port, no healthcheck, only the routes volume
    assert "ports" not in job and "configs" not in job and job["entrypoint"] == ["/bin/sh", "-c"]
    assert [v["target"] for v in job["volumes"]] == ["/etc/nginx/difyops-routes"]
    routes = {v["source"] for v in job["volumes"]}
    assert {stack["volumes"][v]["name"] for v in routes} == {"u-gateway-routes"}
    # ... the gateway's own routes volume, on the gateway's nodes
    own = gateway.stack["services"]["nginx"]
    assert {gateway.stack["volumes"][v["source"]]["name"] for v in own["volumes"]
            if v.get("target") == "/etc/nginx/difyops-routes"} == {"u-gateway-routes"}
    assert job["deploy"]["placement"]["constraints"] == own["deploy"]["placement"]["constraints"]
    assert job["deploy"]["restart_policy"] == {"condition": "none"}
    assert "NGINX_SOCKET_IO_UPSTREAM api:5001 api_websocket:5001" in job["command"][0]
    # a node without a gateway is fine; `docker stack deploy` interpolates the file: every $ doubled
    assert job["command"][0] == rr.routes_script(switches, no_gateway_code=0).replace("$", "$$")
    assert "node.label=difyops.role.gateway=true" in next(cmd for cmd in commands(c) if "node ls" in cmd)
    assert commands(c)[-1] == "docker --context m stack rm u-routes"  # never left running
