"""images: catalogue, refs and mirrors, build command lines, and the images.* tasks (no Docker)."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit
from rich.console import Console

from difyops import digests, images, paths, release_sets
from difyops.errors import DifyopsError
from difyops.tasks import images as image_tasks

RELEASE = release_sets.default()  # Dify's pins: the one catalogue

DOCKER_UP = {r"^docker info": Result("26.1.5")}
MIRROR = "registry.example.cn/dockerhub"


@pytest.fixture(autouse=True)
def tools_on_path(monkeypatch):
    monkeypatch.setattr("difyops.tasks.images.shutil.which", lambda name: f"/usr/bin/{name}")
    # A wide console, so table rows stay on one line whatever the terminal.
    monkeypatch.setattr(image_tasks, "console", Console(width=200, highlight=False))


def context(env_path, **results):
    table = dict(DOCKER_UP)
    table.update(results)
    return mock_context(env_path, table)


# ----------------------------------------------------------------------------- refs and mirrors


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("redis", "docker.io/library/redis:latest"),
        ("redis:6-alpine", "docker.io/library/redis:6-alpine"),
        ("nginx:1.27.5", "docker.io/library/nginx:1.27.5"),
        ("langgenius/dify-api:1.13.3", "docker.io/langgenius/dify-api:1.13.3"),
        ("docker.io/redis:6-alpine", "docker.io/library/redis:6-alpine"),
        ("index.docker.io/library/nginx:1.27.5", "docker.io/library/nginx:1.27.5"),
        ("docker.io/ubuntu/squid:6.6-24.04_beta", "docker.io/ubuntu/squid:6.6-24.04_beta"),
        ("ghcr.io/org/app:2", "ghcr.io/org/app:2"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/team/app:1", "localhost:5000/team/app:1"),
        ("registry.example.cn:5000/x/y", "registry.example.cn:5000/x/y:latest"),
        ("redis@sha256:" + "a" * 64, "docker.io/library/redis@sha256:" + "a" * 64),
        ("redis:7@sha256:" + "b" * 64, "docker.io/library/redis:7@sha256:" + "b" * 64),
    ],
)
def test_normalize_ref_follows_docker_hub_rules(ref, expected):
    assert images.normalize_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "  ", "Redis:6", "redis:-bad", "redis@md5", "a b:1", "/redis", "redis:"])
def test_normalize_ref_refuses_what_docker_refuses(ref):
    with pytest.raises(DifyopsError):
        images.normalize_ref(ref)


@pytest.mark.parametrize(
    "ref, mirror, expected",
    [
        ("redis:6-alpine", MIRROR, f"{MIRROR}/library/redis:6-alpine"),
        ("nginx:1.27.5", MIRROR, f"{MIRROR}/library/nginx:1.27.5"),
        ("langgenius/dify-api:1.13.3", MIRROR, f"{MIRROR}/langgenius/dify-api:1.13.3"),
        ("pgvector/pgvector:0.8.0-pg17", MIRROR, f"{MIRROR}/pgvector/pgvector:0.8.0-pg17"),
        ("docker.io/ubuntu/squid:6.6-24.04_beta", MIRROR, f"{MIRROR}/ubuntu/squid:6.6-24.04_beta"),
        ("redis", MIRROR, f"{MIRROR}/library/redis:latest"),
        ("redis@sha256:" + "c" * 64, MIRROR, f"{MIRROR}/library/redis@sha256:" + "c" * 64),
        # the mirror may be written as a URL or with a trailing slash
        ("redis:6-alpine", f"https://{MIRROR}/", f"{MIRROR}/library/redis:6-alpine"),
        ("redis:6-alpine", "docker.m.example.io", "docker.m.example.io/library/redis:6-alpine"),
        # prefix mirrors that take the registry in the path
        ("redis:6-alpine", "m.example.io/docker.io", "m.example.io/docker.io/library/redis:6-alpine"),
        # unchanged: no mirror, another registry, a local build
        ("redis:6-alpine", "", "redis:6-alpine"),
        ("redis:6-alpine", None, "redis:6-alpine"),
        ("redis:6-alpine", "  ", "redis:6-alpine"),
        ("ghcr.io/org/app:2", MIRROR, "ghcr.io/org/app:2"),
        ("difyops-local/postgres:17", MIRROR, "difyops-local/postgres:17"),
        ("difyops-standin/dify-api:v1", MIRROR, "difyops-standin/dify-api:v1"),
    ],
)
def test_mirror_ref(ref, mirror, expected):
    assert images.mirror_ref(ref, mirror) == expected


def test_pull_commands_tag_the_mirrored_image_with_the_canonical_name():
    assert images.pull_commands("redis:6-alpine", MIRROR) == [
        ["docker", "pull", f"{MIRROR}/library/redis:6-alpine"],
        ["docker", "tag", f"{MIRROR}/library/redis:6-alpine", "redis:6-alpine"],
    ]
    assert images.pull_commands("redis:6-alpine", "") == [["docker", "pull", "redis:6-alpine"]]


def test_inspect_argv_matches_the_probe():
    assert images.inspect_argv("redis:6-alpine") == ["docker", "image", "inspect", "--format", "{{.Id}}", "redis:6-alpine"]


# ----------------------------------------------------------------------------- catalogue


def conventions_table() -> dict[str, tuple[str, str]]:
    """variable -> (default, local build) from docs/CONVENTIONS.md's Images table."""
    text = (paths.ROOT / "docs" / "CONVENTIONS.md").read_text()
    rows = re.findall(r"^\| ([A-Z_]+_IMAGE) \| ([^|]+?) \| (\S+)", text, flags=re.M)
    return {var: (default, local) for var, default, local in rows}


CORE = ("DIFY_API_IMAGE", "DIFY_WEB_IMAGE", "DIFY_SANDBOX_IMAGE", "DIFY_PLUGIN_DAEMON_IMAGE",
        "POSTGRES_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE", "SSRF_PROXY_IMAGE")


def test_catalogue_matches_the_conventions_table():
    table = conventions_table()
    assert set(CORE) <= set(table)
    for variable, (default, local) in table.items():
        spec = images.find(variable)
        if "images.list" not in default:  # Dify's own defer to the catalogue (the release set)
            assert spec.default.replace("{dify_version}", f"${{DIFY_VERSION:-{RELEASE.release}}}") == default
        else:
            assert variable in {RELEASE.image(n).variable for n in ("api", "web", "sandbox", "plugin_daemon")}
        assert spec.local.tag == local
    variables = [spec.variable for spec in images.CATALOGUE]
    assert len(variables) == len(set(variables)), "a variable is in the catalogue twice"


def test_catalogue_defaults_match_the_compose_files():
    compose_text = "\n".join(p.read_text() for p in sorted(paths.COMPOSE_DIR.glob("*.yml")))
    found = dict(re.findall(r"image: \$\{([A-Z_]+_IMAGE):-(.+)\}\s*$", compose_text, flags=re.M))
    assert set(CORE) <= set(found), "an image variable is missing from compose/*.yml"
    known = {spec.variable: spec for spec in images.CATALOGUE}
    for variable, default in found.items():
        if variable in known:  # images without a local build (e.g. Grafana) are not catalogued
            assert known[variable].default.replace("{dify_version}", f"${{DIFY_VERSION:-{RELEASE.release}}}") == default


def test_resolve_gives_official_defaults_for_an_empty_env():
    refs = {item.variable: item.ref for item in images.resolve({}) if item.variable in CORE}
    assert refs == {
        **{RELEASE.image(name).variable: RELEASE.image(name).ref for name in ("api", "web", "sandbox", "plugin_daemon")},
        "POSTGRES_IMAGE": "pgvector/pgvector:0.8.0-pg17",
        "REDIS_IMAGE": "redis:6-alpine",
        "NGINX_IMAGE": "nginx:1.27.5",
        "SSRF_PROXY_IMAGE": "ubuntu/squid:6.6-24.04_beta",
    }
    assert not any(item.from_env for item in images.resolve({}))


def test_dify_version_feeds_only_the_api_and_web_defaults():
    refs = {item.variable: item.ref for item in images.resolve({"DIFY_VERSION": "1.16.0"})}
    assert refs["DIFY_API_IMAGE"] == f"{RELEASE.image('api').repository}:1.16.0"
    assert refs["DIFY_WEB_IMAGE"] == f"{RELEASE.image('web').repository}:1.16.0"
    assert refs["DIFY_SANDBOX_IMAGE"] == RELEASE.image("sandbox").ref
    assert refs["REDIS_IMAGE"] == "redis:6-alpine"


def test_env_values_override_and_empty_values_mean_the_default():
    env = {
        "DIFY_VERSION": "1.16.0",
        "DIFY_API_IMAGE": "registry.example.cn/dify/api:custom",
        "POSTGRES_IMAGE": "difyops-local/postgres:17",
        "REDIS_IMAGE": "",  # Compose's ${VAR:-default}: empty is the default
        "NGINX_IMAGE": "   ",
    }
    by_var = {item.variable: item for item in images.resolve(env)}
    assert by_var["DIFY_API_IMAGE"].ref == "registry.example.cn/dify/api:custom"
    assert by_var["DIFY_API_IMAGE"].from_env
    assert by_var["DIFY_WEB_IMAGE"].ref == f"{RELEASE.image('web').repository}:1.16.0"
    assert by_var["POSTGRES_IMAGE"].ref == "difyops-local/postgres:17"
    assert by_var["POSTGRES_IMAGE"].is_local_build
    assert by_var["REDIS_IMAGE"].ref == "redis:6-alpine" and not by_var["REDIS_IMAGE"].from_env
    assert by_var["NGINX_IMAGE"].ref == "nginx:1.27.5"


def test_select_defaults_to_the_four_local_images_and_accepts_names():
    everything_local = images.select(None)
    assert everything_local == images.local_images()
    assert [s.name for s in everything_local][:4] == ["postgres", "redis", "nginx", "squid"]
    assert not any(s.local.test_double for s in everything_local)
    assert [s.name for s in images.select(["redis", "SSRF_PROXY_IMAGE"])] == ["redis", "squid"]
    assert [s.name for s in images.select(["redis,nginx", "redis"])] == ["redis", "nginx"]
    with_doubles = [s.name for s in images.select(None, standins=True)]
    assert with_doubles[:4] == ["postgres", "redis", "nginx", "squid"] and "dify-api" in with_doubles
    assert len(with_doubles) == len(everything_local) + len(images.standin_images())
    with pytest.raises(DifyopsError, match="unknown image 'mysql'"):
        images.select(["mysql"])


def test_local_env_lines():
    assert images.local_env_lines(images.select(["postgres", "squid"])) == [
        "POSTGRES_IMAGE=difyops-local/postgres:17",
        "SSRF_PROXY_IMAGE=difyops-local/squid:6",
    ]


@pytest.mark.parametrize("spec", images.local_images(), ids=lambda s: s.name)
def test_every_local_image_folder_builds_from_the_base_with_the_ca_option(spec):
    folder = spec.local.context_dir()
    dockerfile = (folder / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={images.BASE_IMAGE}" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile
    # The optional CA bundle: a glob COPY that also matches a file always present, then the base
    # image's difyops-extra-ca first in the next RUN (after the monitoring stage's build-arg check).
    copy = re.search(r"^COPY \S+ extra-ca\.cr\[t\] /tmp/difyops-build/$", dockerfile, flags=re.M)
    assert copy
    run = re.search(r"^RUN set -eux; \\\n(    : \"\$\{PACKAGE:\?\}\".*\n)?(.*)\n", dockerfile[copy.end():], flags=re.M)
    assert run and run.group(2) == "    difyops-extra-ca /tmp/difyops-build/extra-ca.crt; \\"
    # What the base image carries is not repeated here.
    assert "policy-rc.d" not in dockerfile
    assert "/usr/local/share/ca-certificates" not in dockerfile
    assert not (folder / images.EXTRA_CA_FILE).exists(), "a CA bundle was left in the repository"


def test_every_base_image_reference_is_the_current_base():
    """The base's tag changes with its files: no Dockerfile, script or doc may name an older one."""
    names = re.compile(r"difyops/debian:[\w.-]+")
    found = {}
    sources = [paths.ROOT / name for name in ("README.md", "noxfile.py", "tasks.py", ".ci", "benchmarks", "compose",
                                              "difyops", "docs", "examples", "images", "scripts", "tests")]
    files = [p for top in sources for p in ([top] if top.is_file() else sorted(top.rglob("*")))]
    for path in files:
        if "__pycache__" in path.parts or not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for name in names.findall(text):
            found.setdefault(name, set()).add(str(path.relative_to(paths.ROOT)))
    assert set(found) <= set(images.BASE_SUITES) and images.BASE_IMAGE in found, found
    assert "tests/swarm/node/Dockerfile" in found[images.BASE_IMAGE]
    assert "tests/standin/Dockerfile" in found[images.BASE_IMAGE]


# ----------------------------------------------------------------------------- builds


def test_build_argv_without_ca_bundle_uses_the_repository_folder():
    spec = images.find("postgres")
    plan = images.plan_build(spec, root=Path("/repo"))
    assert plan.argv == [
        "docker", "build", "--tag", "difyops-local/postgres:17",
        "--file", "/repo/images/postgres/Dockerfile",
        "--build-arg", "BASE_IMAGE=difyops/debian:trixie-2",
        "/repo/images/postgres",
    ]
    assert not plan.staged and plan.ca_bundle is None


def test_build_argv_with_ca_bundle_uses_a_staged_copy_and_labels_the_bundle(tmp_path):
    spec = images.find("nginx")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    staging = tmp_path / "staging"
    plan = images.plan_build(spec, root=paths.ROOT, ca_bundle=bundle, staging_dir=staging, no_cache=True)
    digest = digests.file_sha256(bundle)
    assert plan.argv == [
        "docker", "build", "--tag", "difyops-local/nginx:1.26",
        "--file", f"{staging}/nginx/Dockerfile",
        "--build-arg", "BASE_IMAGE=difyops/debian:trixie-2",
        "--label", f"io.difyops.extra-ca.sha256={digest}",
        "--no-cache",
        f"{staging}/nginx",
    ]
    images.stage_build_context(plan)
    assert (staging / "nginx" / "extra-ca.crt").read_text() == bundle.read_text()
    assert (staging / "nginx" / "Dockerfile").read_text() == (paths.IMAGES_DIR / "nginx" / "Dockerfile").read_text()
    assert not (paths.IMAGES_DIR / "nginx" / "extra-ca.crt").exists()


def test_standin_build_argv_targets_its_stage():
    plan = images.plan_build(images.find("dify-api"), root=Path("/repo"))
    assert plan.argv == [
        "docker", "build", "--tag", "difyops-standin/dify-api:v1",
        "--file", "/repo/tests/standin/Dockerfile", "--target", "api",
        "--build-arg", "STANDIN_VERSION=v1", "/repo/tests/standin",
    ]


# The seven monitoring images: one Dockerfile, one stage each, build args from the catalogue.
FAMILY = [spec for spec in images.local_images() if spec.local.context == images.PROMETHEUS_FAMILY]
FAMILY_DOCKERFILE = (paths.ROOT / images.PROMETHEUS_FAMILY / "Dockerfile").read_text()


def _stages(dockerfile: str) -> dict[str, list[str]]:
    """stage name -> its instruction lines (continuations joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^FROM \S+ AS (\S+)$", line)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def test_the_monitoring_images_are_the_targets_of_one_dockerfile():
    assert [spec.name for spec in FAMILY] == [
        "prometheus", "alertmanager", "node-exporter", "postgres-exporter", "redis-exporter",
        "nginx-exporter", "blackbox-exporter",
    ]
    stages = _stages(FAMILY_DOCKERFILE)
    assert set(stages) == {"base"} | {spec.local.target for spec in FAMILY}, "a stage without an image, or the reverse"
    for spec in FAMILY:
        assert spec.local.target == spec.name
        assert not (paths.IMAGES_DIR / spec.name).exists(), f"images/{spec.name} is back beside the shared Dockerfile"


@pytest.mark.parametrize("spec", FAMILY, ids=lambda s: s.name)
def test_each_monitoring_stage_runs_the_binary_its_build_args_check(spec):
    args = dict(spec.local.build_args)
    stage = _stages(FAMILY_DOCKERFILE)[spec.local.target]
    # The base stage checks BINARY --version; the stage must run that same binary.
    entrypoints = [line for line in stage if line.startswith("ENTRYPOINT ")]
    assert entrypoints == [f'ENTRYPOINT ["{args["BINARY"]}"]']
    links = dict(pair.split("=", 1) for pair in args["LINKS"].split())
    assert args["BINARY"] in links
    assert all(link.startswith("/") and target.startswith("/usr/bin/") for link, target in links.items())
    assert args["PACKAGE"].startswith("prometheus")
    assert args["TITLE"] == spec.local.tag.rsplit(":", 1)[0] == f"difyops-local/{spec.name}"
    assert args["STANDS_FOR"] == spec.default
    assert args["PORT"].isdigit()
    # A data folder is made for the stage that declares it a volume and works in it, and only then.
    volumes = [line for line in stage if line.startswith("VOLUME ")]
    if "DATA_DIR" in args:
        assert volumes == [f'VOLUME ["{args["DATA_DIR"]}"]'] and f'WORKDIR {args["DATA_DIR"]}' in stage
    else:
        assert volumes == [] and not any(line.startswith("WORKDIR ") for line in stage)
    # Only what the Dockerfile declares is passed, and everything it requires is.
    declared = set(re.findall(r"^ARG (\w+)", FAMILY_DOCKERFILE, flags=re.MULTILINE))
    required = set(re.findall(r'"\$\{(\w+):\?\}"', FAMILY_DOCKERFILE))
    assert required == {"PACKAGE", "BINARY", "VERSION_REGEX", "PORT", "TITLE", "STANDS_FOR"}
    assert required <= set(args) <= declared


def test_version_regexes_match_what_debian_ships_and_not_another_major():
    seen = {  # the first line of each binary's --version in the images built from Debian 13
        "prometheus": "prometheus, version 2.53.3+ds1 (branch: debian/sid, revision: 2.53.3+ds1-2)",
        "alertmanager": "alertmanager, version 0.28.1+ds (branch: debian/sid, revision: 0.28.1+ds-1)",
        "node-exporter": "node_exporter, version 1.9.0 (branch: debian/sid, revision: 1.9.0-1+b4)",
        "postgres-exporter": "postgres_exporter, version 0.17.1 (branch: debian/sid, revision: 0.17.1-1+b4)",
        "redis-exporter": 'level=info msg="Redis Metrics Exporter 1.69.0-1    build date: 20250326-22:59:43"',
        "nginx-exporter": "nginx_exporter, version 1.4.1 (branch: debian/sid, revision: 1.4.1-1+b5)",
        "blackbox-exporter": "blackbox_exporter, version 0.26.0 (branch: debian/sid, revision: 0.26.0-1)",
    }
    for spec in FAMILY:
        regex = dict(spec.local.build_args)["VERSION_REGEX"]
        assert re.search(regex, seen[spec.name]), spec.name
        other = re.sub(r"(\d+)\.(\d+)", lambda m: f"{int(m.group(1)) + 1}.{m.group(2)}", seen[spec.name], count=1)
        assert not re.search(regex, other), f"{spec.name}: {regex} also accepts {other}"


def test_monitoring_image_build_argv_targets_its_stage_with_its_args():
    plan = images.plan_build(images.find("node-exporter"), root=Path("/repo"))
    assert plan.argv == [
        "docker", "build", "--tag", "difyops-local/node-exporter:1",
        "--file", "/repo/images/prometheus-family/Dockerfile", "--target", "node-exporter",
        "--build-arg", "BASE_IMAGE=difyops/debian:trixie-2",
        "--build-arg", "PACKAGE=prometheus-node-exporter",
        "--build-arg", "LINKS=/bin/node_exporter=/usr/bin/prometheus-node-exporter",
        "--build-arg", "BINARY=/bin/node_exporter",
        "--build-arg", r"VERSION_REGEX=version v?1\.",
        "--build-arg", "PORT=9100",
        "--build-arg", "TITLE=difyops-local/node-exporter",
        "--build-arg", "STANDS_FOR=prom/node-exporter:v1.9.0",
        "/repo/images/prometheus-family",
    ]
    prometheus = dict(images.find("prometheus").local.build_args)
    assert prometheus["LINKS"] == "/bin/prometheus=/usr/bin/prometheus /bin/promtool=/usr/bin/promtool"
    assert prometheus["DATA_DIR"] == "/prometheus"


def test_build_local_with_ca_bundle_stages_the_shared_folder_once_per_image(tmp_path, capsys):
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = write_env(tmp_path / ".env")
    staged: list[tuple[Path, list[str]]] = []
    real_stage = images.stage_build_context

    def stage_and_look(plan):
        real_stage(plan)
        staged.append((plan.context, sorted(p.name for p in plan.context.iterdir())))

    c = context(env, **{r"^docker image inspect": Result("sha256:base"), r"^docker build ": OK})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "stage_build_context", stage_and_look)
        image_tasks.build_local(c, only=["alertmanager,redis-exporter"], ca_bundle=str(bundle))
    builds = [shlex.split(cmd) for cmd in commands(c) if cmd.startswith("docker build")]
    assert [argv[argv.index("--target") + 1] for argv in builds] == ["alertmanager", "redis-exporter"]
    assert [Path(argv[-1]).name for argv in builds] == ["alertmanager", "redis-exporter"]
    assert [names for _, names in staged] == [["Dockerfile", "extra-ca.crt"]] * 2
    assert all(f"io.difyops.extra-ca.sha256={digests.file_sha256(bundle)}" in argv for argv in builds)
    assert not any(path.exists() for path, _ in staged), "a staged build context was not removed"
    out = capsys.readouterr().out
    assert "difyops-local/alertmanager:0.28 from images/prometheus-family/ (target alertmanager)" in out


def test_ca_bundle_path_checks_the_file(tmp_path):
    assert images.ca_bundle_path(None) is None
    assert images.ca_bundle_path("") is None
    with pytest.raises(DifyopsError, match="is not a file"):
        images.ca_bundle_path(tmp_path / "missing.pem")
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    with pytest.raises(DifyopsError, match="no PEM certificate"):
        images.ca_bundle_path(not_pem)
    good = tmp_path / "ca.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert images.ca_bundle_path(str(good)) == good
    assert images.ca_bundle_path("ca.pem", root=tmp_path) == good


BASE_SCRIPT = images.BASE_ROOTFS / "usr/local/sbin/difyops-extra-ca"
BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_install_base_files_adds_the_overlay_with_fixed_modes(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/sbin").mkdir(parents=True)
    assert images.install_base_files(rootfs) == ["/usr/local/sbin/difyops-extra-ca", "/usr/sbin/policy-rc.d"]
    policy = rootfs / "usr/sbin/policy-rc.d"
    assert policy.read_text() == "#!/bin/sh\nexit 101\n"
    assert policy.stat().st_mode & 0o7777 == 0o755
    script = rootfs / "usr/local/sbin/difyops-extra-ca"
    assert script.read_bytes() == BASE_SCRIPT.read_bytes()
    assert script.stat().st_mode & 0o7777 == 0o755


def _extra_ca(tmp_path, *args):
    """Run difyops-extra-ca with its two trust store folders moved under tmp_path."""
    text = BASE_SCRIPT.read_text()
    text = text.replace("/usr/local/share/ca-certificates", f"{tmp_path}/usr/local/share/ca-certificates")
    text = text.replace("/etc/ssl/certs", f"{tmp_path}/etc/ssl/certs")
    code = [line for line in text.splitlines()[1:] if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.search(r"(^|[\s\"'])/(usr|etc)/", line)], "a path left on this host"
    script = tmp_path / "difyops-extra-ca"
    script.write_text(text)
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True)


def test_extra_ca_script_is_posix_sh_and_checks_its_usage(tmp_path):
    assert BASE_SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(BASE_SCRIPT)]).returncode == 0
    for args in ((), ("a", "b"), ("",)):
        result = _extra_ca(tmp_path, *args)
        assert result.returncode == 2 and "usage: difyops-extra-ca FILE" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "difyops-extra-ca"]


def test_extra_ca_script_without_the_file_changes_nothing(tmp_path):
    result = _extra_ca(tmp_path, str(tmp_path / "extra-ca.crt"))
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    assert list(tmp_path.iterdir()) == [tmp_path / "difyops-extra-ca"]


def test_extra_ca_script_adds_the_bundle_and_bootstraps_an_absent_store(tmp_path):
    bundle = tmp_path / "extra-ca.crt"
    bundle.write_text(BUNDLE)
    assert _extra_ca(tmp_path, str(bundle)).returncode == 0
    assert (tmp_path / "usr/local/share/ca-certificates/difyops-extra-ca.crt").read_text() == BUNDLE
    assert (tmp_path / "etc/ssl/certs/ca-certificates.crt").read_text() == BUNDLE


def test_extra_ca_script_leaves_an_existing_store_to_update_ca_certificates(tmp_path):
    store = tmp_path / "etc/ssl/certs/ca-certificates.crt"
    store.parent.mkdir(parents=True)
    store.write_text("debian's CAs\n")
    bundle = tmp_path / "extra-ca.crt"
    bundle.write_text(BUNDLE)
    assert _extra_ca(tmp_path, str(bundle)).returncode == 0
    assert (tmp_path / "usr/local/share/ca-certificates/difyops-extra-ca.crt").read_text() == BUNDLE
    assert store.read_text() == "debian's CAs\n"


def test_base_image_commands():
    rootfs = Path("/var/tmp/rootfs")
    assert images.debootstrap_argv(rootfs) == [
        "debootstrap", "--variant=minbase", "trixie", "/var/tmp/rootfs", "http://deb.debian.org/debian",
    ]
    mirror = images.debian_mirror({"DIFYOPS_DEBIAN_MIRROR": "http://mirrors.example.cn/debian"})
    assert images.debootstrap_argv(rootfs, mirror)[-1] == "http://mirrors.example.cn/debian"
    assert images.debian_mirror({}) == "http://deb.debian.org/debian"
    assert images.base_import_command(rootfs) == "tar -C /var/tmp/rootfs -c . | docker import - difyops/debian:trixie-2"
    assert images.base_image_problems(0, "/usr/sbin/debootstrap") == []
    assert len(images.base_image_problems(1000, None)) == 2


# ----------------------------------------------------------------------------- tasks


def test_pull_with_mirror_pulls_the_mirrored_ref_then_tags_it(tmp_path, capsys):
    env = write_env(tmp_path / ".env", DIFYOPS_IMAGE_MIRROR=MIRROR)
    c = context(env, **{r"^docker (pull|tag) ": OK})
    image_tasks.pull(c, only=["redis"])
    assert commands(c) == [
        "docker info --format '{{.ServerVersion}}'",
        f"docker pull {MIRROR}/library/redis:6-alpine",
        f"docker tag {MIRROR}/library/redis:6-alpine redis:6-alpine",
    ]
    assert f"pulled  redis:6-alpine (from {MIRROR}/library/redis:6-alpine)" in capsys.readouterr().out


def test_pull_mirror_flag_overrides_env_and_empty_disables_it(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_IMAGE_MIRROR=MIRROR)
    c = context(env, **{r"^docker (pull|tag) ": OK})
    image_tasks.pull(c, only=["NGINX_IMAGE"], mirror="https://hub.example.org/")
    assert commands(c)[1:] == [
        "docker pull hub.example.org/library/nginx:1.27.5",
        "docker tag hub.example.org/library/nginx:1.27.5 nginx:1.27.5",
    ]
    c = context(env, **{r"^docker (pull|tag) ": OK})
    image_tasks.pull(c, only=["NGINX_IMAGE"], mirror="")
    assert commands(c)[1:] == ["docker pull nginx:1.27.5"]


def test_pull_everything_uses_env_refs_and_dify_version(tmp_path):
    env = write_env(tmp_path / ".env", DIFY_VERSION="1.16.0", REDIS_IMAGE="redis:7.4")
    c = context(env, **{r"^docker pull ": OK, r"^docker image inspect": Result("sha256:1")})
    image_tasks.pull(c)
    pulls = [cmd for cmd in commands(c) if cmd.startswith("docker pull")]
    pulled_refs = [cmd.split()[-1] for cmd in pulls]
    expected_all = [r.ref for r in images.resolve({"DIFY_VERSION": "1.16.0", "REDIS_IMAGE": "redis:7.4"})
                    if not r.is_local_build]
    assert pulled_refs == expected_all
    assert pulls[:8] == [
        f"docker pull {RELEASE.image('api').repository}:1.16.0",
        f"docker pull {RELEASE.image('web').repository}:1.16.0",
        f"docker pull {RELEASE.image('sandbox').ref}",
        f"docker pull {RELEASE.image('plugin_daemon').ref}",
        "docker pull pgvector/pgvector:0.8.0-pg17",
        "docker pull redis:7.4",
        "docker pull nginx:1.27.5",
        "docker pull ubuntu/squid:6.6-24.04_beta",
    ]


def test_failing_pull_exits_with_one_line_after_trying_every_image(tmp_path, capsys):
    env = write_env(tmp_path / ".env")
    c = context(env, **{
        r"^docker pull redis": fail_result("Error response from daemon: dial tcp: lookup registry-1.docker.io: no such host"),
        r"^docker pull ": OK,
    })
    with pytest.raises(Exit) as caught:
        image_tasks.pull(c, only=["redis", "nginx"])
    message = str(caught.value.message)
    assert caught.value.code == 1
    assert "\n" not in message
    assert message.startswith("error: 1 of 2 images could not be pulled (redis:6-alpine)")
    assert "DIFYOPS_IMAGE_MIRROR" in message
    assert "docker pull nginx:1.27.5" in commands(c)
    assert "failed  redis:6-alpine: pull failed: Error response from daemon" in capsys.readouterr().out


def test_failing_tag_after_a_mirror_pull_is_a_failure(tmp_path):
    env = write_env(tmp_path / ".env")
    c = context(env, **{r"^docker pull ": OK, r"^docker tag ": fail_result("no such image")})
    with pytest.raises(Exit, match="could not be pulled"):
        image_tasks.pull(c, only=["redis"], mirror=MIRROR)


def test_pull_does_not_pull_local_builds(tmp_path, capsys):
    env = write_env(tmp_path / ".env", POSTGRES_IMAGE="difyops-local/postgres:17")
    c = context(env, **{r"^docker image inspect": Result("sha256:1")})
    image_tasks.pull(c, only=["postgres"])
    assert not [cmd for cmd in commands(c) if cmd.startswith("docker pull")]
    assert "local   difyops-local/postgres:17: built here, present" in capsys.readouterr().out
    c = context(env, **{r"^docker image inspect": fail_result("No such image")})
    with pytest.raises(Exit, match="could not be pulled"):
        image_tasks.pull(c, only=["postgres"])


def test_pull_refuses_a_bad_ref_before_pulling(tmp_path):
    env = write_env(tmp_path / ".env", REDIS_IMAGE="Redis:6")
    c = context(env)
    with pytest.raises(Exit, match="repository names are lower case"):
        image_tasks.pull(c)
    assert commands(c) == []


def test_tasks_need_docker(tmp_path):
    env = write_env(tmp_path / ".env")
    c = mock_context(env, {r"^docker info": fail_result("Cannot connect to the Docker daemon")})
    with pytest.raises(Exit, match="Docker daemon is not running"):
        image_tasks.pull(c)
    with pytest.raises(Exit, match="Docker daemon is not running"):
        image_tasks.list_(c)


def test_build_local_builds_every_local_image_in_order_and_prints_env_lines(tmp_path, capsys):
    env = write_env(tmp_path / ".env")
    c = context(env, **{r"^docker image inspect": Result("sha256:base"), r"^docker build ": OK})
    image_tasks.build_local(c)
    ran = commands(c)
    assert ran[1] == shlex.join(images.inspect_argv(images.BASE_IMAGE))
    builds = [cmd for cmd in ran if cmd.startswith("docker build")]
    assert builds == [shlex.join(images.plan_build(spec).argv) for spec in images.local_images()]
    assert builds[:4] == [shlex.join(images.plan_build(images.find(n)).argv)
                          for n in ("postgres", "redis", "nginx", "squid")]
    out = capsys.readouterr().out
    total = len(images.local_images())
    assert f"[1/{total}] difyops-local/postgres:17" in out and f"[4/{total}] difyops-local/squid:6: built" in out
    for line in ("POSTGRES_IMAGE=difyops-local/postgres:17", "REDIS_IMAGE=difyops-local/redis:8",
                 "NGINX_IMAGE=difyops-local/nginx:1.26", "SSRF_PROXY_IMAGE=difyops-local/squid:6"):
        assert line in out


def test_build_local_makes_the_base_image_only_when_missing(tmp_path, monkeypatch):
    env = write_env(tmp_path / ".env", DIFYOPS_DEBIAN_MIRROR="http://mirrors.example.cn/debian")
    monkeypatch.setattr("difyops.tasks.images.os.geteuid", lambda: 0)
    c = context(env, **{
        r"^docker image inspect": fail_result("No such image"),
        r"^debootstrap ": OK,
        r"^tar -C ": OK,
        r"^docker build ": OK,
    })
    installed = []
    real_install = images.install_base_files

    def install_and_note(rootfs):
        assert len(commands(c)) == 3 and commands(c)[-1].startswith("debootstrap "), "not between debootstrap and import"
        installed.append(str(rootfs))
        return real_install(rootfs)

    monkeypatch.setattr(images, "install_base_files", install_and_note)
    image_tasks.build_local(c, only=["redis"])
    ran = commands(c)
    debootstrap = [cmd for cmd in ran if cmd.startswith("debootstrap")]
    assert len(debootstrap) == 1
    assert re.fullmatch(r"debootstrap --variant=minbase trixie /var/tmp/difyops-rootfs-\S+/rootfs "
                        r"http://mirrors\.example\.cn/debian", debootstrap[0])
    rootfs = debootstrap[0].split()[3]
    assert f"tar -C {rootfs} -c . | docker import - difyops/debian:trixie-2" in ran
    assert installed == [rootfs], "the base's own files were not added to the debootstrapped rootfs"
    assert ran[-1].startswith("docker build --tag difyops-local/redis:8")
    assert not Path(rootfs).parent.exists(), "the debootstrap folder was not removed"


def test_build_local_without_root_cannot_make_the_base(tmp_path, monkeypatch):
    env = write_env(tmp_path / ".env")
    monkeypatch.setattr("difyops.tasks.images.os.geteuid", lambda: 1000)
    c = context(env, **{r"^docker image inspect": fail_result("No such image")})
    with pytest.raises(Exit, match="debootstrap needs root"):
        image_tasks.build_local(c)
    assert not [cmd for cmd in commands(c) if cmd.startswith(("debootstrap", "docker build"))]


def test_build_local_with_ca_bundle_from_env_builds_a_staged_context(tmp_path):
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = write_env(tmp_path / ".env", DIFYOPS_BUILD_CA_BUNDLE=str(bundle))
    c = context(env, **{r"^docker image inspect": Result("sha256:base"), r"^docker build ": OK})
    image_tasks.build_local(c, only=["squid"])
    build = [cmd for cmd in commands(c) if cmd.startswith("docker build")][0]
    argv = shlex.split(build)
    assert f"io.difyops.extra-ca.sha256={digests.file_sha256(bundle)}" in argv
    context_dir = Path(argv[-1])
    assert context_dir.name == "squid" and context_dir.parent.name.startswith("difyops-build-")
    assert not context_dir.exists(), "the staged build context was not removed"


def test_build_local_with_a_bad_ca_bundle_stops_before_docker(tmp_path):
    env = write_env(tmp_path / ".env", DIFYOPS_BUILD_CA_BUNDLE=str(tmp_path / "nope.pem"))
    c = context(env)
    with pytest.raises(Exit, match="DIFYOPS_BUILD_CA_BUNDLE=.* is not a file"):
        image_tasks.build_local(c)
    assert commands(c) == []


def test_build_local_failure_is_one_line(tmp_path, capsys):
    env = write_env(tmp_path / ".env")
    c = context(env, **{
        r"^docker image inspect": Result("sha256:base"),
        r"^docker build ": Result(stdout="", stderr="E: Unable to locate package postgresql-17\n", exited=100),
    })
    with pytest.raises(Exit) as caught:
        image_tasks.build_local(c, only=["postgres", "redis"])
    assert "\n" not in str(caught.value.message)
    assert "building difyops-local/postgres:17 failed (exit 100)" in str(caught.value.message)
    assert "Unable to locate package" in capsys.readouterr().out
    assert len([cmd for cmd in commands(c) if cmd.startswith("docker build")]) == 1


def test_build_local_unknown_name(tmp_path):
    env = write_env(tmp_path / ".env")
    c = context(env)
    with pytest.raises(Exit, match="unknown image 'mysql'"):
        image_tasks.build_local(c, only=["mysql"])


def test_list_shows_each_variable_ref_and_presence(tmp_path, capsys):
    env = write_env(tmp_path / ".env", REDIS_IMAGE="difyops-local/redis:8")
    c = context(env, **{
        r"^docker image inspect .*difyops-local/redis:8$": Result("sha256:r"),
        r"^docker image inspect": fail_result("No such image"),
    })
    image_tasks.list_(c)
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if "_IMAGE" in line and len(line.split()) > 3}
    assert "difyops-local/redis:8" in lines["REDIS_IMAGE"] and "yes" in lines["REDIS_IMAGE"]
    assert ".env" in lines["REDIS_IMAGE"]
    assert "nginx:1.27.5" in lines["NGINX_IMAGE"] and "no" in lines["NGINX_IMAGE"]
    assert f"{len(images.CATALOGUE) - 1} missing" in out


@pytest.mark.parametrize("name", ["build-local", "pull", "list"])
def test_tasks_explain_themselves(name):
    task = image_tasks.ns[name]
    first_line = inspect.getdoc(task.body).splitlines()[0]
    assert first_line and len(first_line) <= 80
    for param in inspect.signature(task.body).parameters:
        if param != "c":
            assert task.help.get(param), f"--{param} has no help"


def test_failing_pull_through_a_mirror_points_at_the_mirror(tmp_path):
    env = write_env(tmp_path / ".env")
    c = context(env, **{r"^docker pull ": fail_result("manifest unknown")})
    with pytest.raises(Exit, match=f"check that {MIRROR} is reachable and mirrors these images"):
        image_tasks.pull(c, only=["redis"], mirror=MIRROR)
