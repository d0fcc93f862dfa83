"""adopt and pgmove: the plan's pure parts, the settings mapping, the refusals and the undo, through
MockContext (no Docker). The real run is tests/adopt (nox -s adopt)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from conftest import OK, commands, fail_result, mock_context, write_env
from invoke import Result
from invoke.exceptions import Exit

from difyops import envfile
from difyops import adopt as ad
from difyops import adopt_run as ar
from difyops import pgmove
from difyops.config import load_settings
from difyops.tasks import adopt as tasks

OFFICIAL_ENV = {
    "SECRET_KEY": "a-user-chosen-secret-key-of-the-official-install-0123456789",
    "DB_USERNAME": "postgres", "DB_PASSWORD": "difyai123456", "DB_HOST": "db_postgres", "DB_PORT": "5432",
    "DB_DATABASE": "dify", "REDIS_HOST": "redis", "REDIS_PASSWORD": "difyai123456",
    "CELERY_BROKER_URL": "redis://:difyai123456@redis:6379/1", "SANDBOX_API_KEY": "dify-sandbox",
    "CODE_EXECUTION_API_KEY": "dify-sandbox", "MIGRATION_ENABLED": "true", "COMPOSE_PROFILES": "weaviate,postgresql",
    "VECTOR_STORE": "weaviate", "WEAVIATE_API_KEY": "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
    "OCEANBASE_VECTOR_PASSWORD": "difyai123456", "APP_MAX_EXECUTION_TIME": "1200", "NGINX_HTTPS_ENABLED": "false",
    "EXPOSE_NGINX_PORT": "80", "NEXT_PUBLIC_COOKIE_DOMAIN": "", "CELERY_WORKER_AMOUNT": "4",
}
TARGET_ENV = {"DB_HOST": "db_postgres", "DB_PORT": "5432", "DB_USERNAME": "postgres", "NGINX_BIND_ADDRESS": "127.0.0.1",
              "CELERY_BROKER_URL": "redis://:x@redis:6379/1", "REDIS_HOST": "redis"}


def by_key(rows):
    return {row.key: row for row in rows}


# ----------------------------------------------------------------------------- versions and release sets


@pytest.mark.parametrize("image,version", [
    ("langgenius/dify-api:1.13.3", "1.13.3"),
    ("registry.example.cn:5000/langgenius/dify-api:1.13.3", "1.13.3"),
    ("langgenius/dify-api:${DIFY_VERSION:-1.14.0}", "1.14.0"),
    ("difyops-standin/dify-api:v1", None),
    ("langgenius/dify-api:latest", None),
    ("", None),
])
def test_version_of_image(image, version):
    assert ad.version_of_image(image) == version


def test_release_for_maps_by_version_and_refuses_older_and_newer():
    assert ad.release_for("1.13.3", ["1.13.3"]) == "1.13.3"
    assert ad.release_for("1.14.2", ["1.13.3", "1.15.0", "1.16.0"]) == "1.15.0"
    assert ad.release_for("1.15.0", ["1.13.3", "1.15.0", "1.16.0"]) == "1.15.0"
    with pytest.raises(ad.AdoptError, match=r"Dify 1\.12\.0 is older than 1\.13\.3, the oldest release this project "
                                            r"supports: upgrade the install with the official bundle"):
        ad.release_for("1.12.0", ["1.13.3", "1.15.0"])
    with pytest.raises(ad.AdoptError, match="newer than 1.15.0"):
        ad.release_for("1.16.1", ["1.13.3", "1.15.0"])
    with pytest.raises(ad.AdoptError, match="is not a version"):
        ad.release_for("next", ["1.13.3"])


def test_release_for_uses_the_installed_release_sets():
    from difyops import release_sets

    assert ad.release_for("1.13.3") == release_sets.supported()[0]


# ----------------------------------------------------------------------------- finding the install


def write_install(folder: Path, api_image="langgenius/dify-api:1.13.3", env=None) -> Path:
    for sub in ("volumes/app/storage/privkeys/t1", "volumes/db/data", "volumes/redis/data", "volumes/plugin_daemon/plugin",
                "volumes/weaviate", "nginx/ssl"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "volumes/app/storage/privkeys/t1/private.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    (folder / "volumes/app/storage/upload_files").mkdir()
    (folder / "volumes/app/storage/upload_files/a").write_bytes(b"x" * 1000)
    (folder / "volumes/db/data/PG_VERSION").write_text("15\n")
    (folder / "volumes/plugin_daemon/plugin/p.difypkg").write_bytes(b"p" * 100)
    (folder / "volumes/weaviate/schema.db").write_bytes(b"w" * 50)
    (folder / "docker-compose.yaml").write_text(f"services:\n  api:\n    image: {api_image}\n")
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in (env or OFFICIAL_ENV).items()))
    return folder


def config_json(folder: Path, api_image="langgenius/dify-api:1.13.3", services=None) -> str:
    def svc(image, mounts, env=None, command=None, networks=("default",)):
        return {"image": image, "volumes": [{"type": "bind", "source": str(folder / s), "target": t} for s, t in mounts],
                "environment": env or {}, "command": command, "networks": {n: None for n in networks}}
    doc = {"name": folder.name, "networks": {"default": {"name": f"{folder.name}_default"}}, "services": {
        "api": svc(api_image, [("volumes/app/storage", "/app/api/storage")]),
        "worker": svc(api_image, [("volumes/app/storage", "/app/api/storage")]),
        "db_postgres": svc("postgres:15-alpine", [("volumes/db/data", "/var/lib/postgresql/data")],
                           {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "difyai123456"}),
        "redis": svc("redis:6-alpine", [("volumes/redis/data", "/data")], {"REDISCLI_AUTH": "difyai123456"},
                     ["redis-server", "--requirepass", "difyai123456"]),
        "plugin_daemon": svc("langgenius/dify-plugin-daemon:0.5.3-local", [("volumes/plugin_daemon", "/app/storage")]),
        "weaviate": svc("semitechnologies/weaviate:1.27.0", [("volumes/weaviate", "/var/lib/weaviate")]),
        "nginx": svc("nginx:latest", [("nginx/ssl", "/etc/ssl")]),
    }}
    if services is not None:
        doc["services"] = {k: v for k, v in doc["services"].items() if k in services}
    return json.dumps(doc)


def ps_json(project: str, running=("api", "worker", "db_postgres", "redis", "plugin_daemon", "nginx")) -> str:
    return "\n".join(json.dumps({"Service": s, "State": "running", "Name": f"{project}-{s}-1", "Health": ""})
                     for s in running)


def install_context(env_path, folder, config=None, ps=None, extra=None, rest=None):
    results = {**(extra or {}),  # first: the first matching pattern answers
               r"docker compose --project-directory \S+ (-f \S+ )+config --format json": Result(config or config_json(folder)),
               r"docker compose --project-directory \S+ .* ps -a --format json": Result(ps if ps is not None else ps_json(folder.name)),
               r"^docker volume inspect": fail_result("no such volume"),
               r"^docker info --format": Result("/nonexistent-docker-root\n"),
               r"redis-cli -h \S+ --no-auth-warning info memory$": Result("# Memory\nused_memory_dataset:3145728\n"),
               **(rest or {})}  # last: what every other command answers
    return mock_context(env_path, results)


def test_a_folder_without_the_bundle_is_not_an_official_install(tmp_path):
    assert ad.dir_problems(tmp_path / "missing")[0].endswith("is not an official Dify install: no such folder")
    assert "has no docker-compose.yaml" in ad.dir_problems(tmp_path)[0]
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    assert "has no .env" in ad.dir_problems(tmp_path)[0]


def test_find_install_reads_compose_config_and_states(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    c = install_context(env_path, folder)
    install = ad.find_install(c, folder)
    assert install.project == "docker" and install.version == "1.13.3"
    assert install.running == ["api", "db_postgres", "nginx", "plugin_daemon", "redis", "worker"]
    assert install.services["redis"].command[-1] == "difyai123456"
    assert install.db_service.mount_for("/var/lib/postgresql/data").source == folder / "volumes/db/data"
    ran = commands(c)
    assert ran[0] == shlex.join(["docker", "compose", "--project-directory", str(folder), "-f",
                                 str(folder / "docker-compose.yaml"), "config", "--format", "json"])
    assert ran[1].endswith("-p docker ps -a --format json")


def test_an_install_without_the_official_services_is_refused(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    c = install_context(env_path, folder, config=config_json(folder, services=("api", "redis")))
    with pytest.raises(ad.AdoptError, match="is not an official Dify install: its compose project has no worker, db_postgres"):
        ad.find_install(c, folder)


def test_an_override_file_counts_and_the_version_comes_from_the_bundle(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    (folder / "docker-compose.override.yaml").write_text("services: {}\n")
    c = install_context(env_path, folder, config=config_json(folder, api_image="mirror.example.cn/api:custom"))
    install = ad.find_install(c, folder)
    assert [p.name for p in install.compose_files] == ["docker-compose.yaml", "docker-compose.override.yaml"]
    assert install.version == "1.13.3"  # docker-compose.yaml's own image names the release


def test_envs_folder_is_read_before_dot_env(tmp_path):
    (tmp_path / "envs" / "api").mkdir(parents=True)
    (tmp_path / "envs" / "api" / "api.env").write_text("LOG_LEVEL=DEBUG\nSECRET_KEY=from-envs\n")
    (tmp_path / "envs" / "api" / "api.env.example").write_text("LOG_LEVEL=example\n")
    (tmp_path / ".env").write_text("SECRET_KEY=from-dot-env\n")
    env, sources = ad.official_env(tmp_path)
    assert env == {"LOG_LEVEL": "DEBUG", "SECRET_KEY": "from-dot-env"}
    assert [p.name for p in sources] == ["api.env", ".env"]


# ----------------------------------------------------------------------------- settings


def test_connection_secrets_are_this_stacks_own_and_secret_key_is_carried():
    rows = by_key(ad.map_settings(OFFICIAL_ENV, TARGET_ENV, release="1.13.3"))
    for key in ("DB_PASSWORD", "REDIS_PASSWORD", "SANDBOX_API_KEY", "CODE_EXECUTION_API_KEY", "WEAVIATE_API_KEY"):
        assert rows[key].action == "generated" and rows[key].value is None, key
        assert "public example value" in rows[key].why
    assert rows["SECRET_KEY"].action == "carried" and rows["SECRET_KEY"].value == OFFICIAL_ENV["SECRET_KEY"]
    values = ad.written_values(rows.values())
    assert values["SECRET_KEY"] == OFFICIAL_ENV["SECRET_KEY"]
    assert "DB_PASSWORD" not in values and "CELERY_BROKER_URL" not in values


def test_a_public_secret_key_is_replaced_only_when_asked():
    env = dict(OFFICIAL_ENV, SECRET_KEY="sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U")
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3", rotate_secret_key=True))
    assert rows["SECRET_KEY"].action == "rotated" and rows["SECRET_KEY"].value != env["SECRET_KEY"]
    assert len(rows["SECRET_KEY"].value) == 64
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3", rotate_secret_key=False))
    assert rows["SECRET_KEY"].action == "carried"


def test_layout_keys_change_with_why_and_official_only_keys_are_not_carried():
    rows = by_key(ad.map_settings(OFFICIAL_ENV, TARGET_ENV, release="1.13.3"))
    assert rows["MIGRATION_ENABLED"].action == "changed" and "one-shot job" in rows["MIGRATION_ENABLED"].why
    assert rows["DB_HOST"].action == "carried"  # same on both sides
    assert rows["COMPOSE_PROFILES"].action == "not carried"
    assert rows["OCEANBASE_VECTOR_PASSWORD"].action == "not carried"  # a public value for a service not run here
    assert rows["APP_MAX_EXECUTION_TIME"].action == "carried" and rows["APP_MAX_EXECUTION_TIME"].value == "1200"
    assert rows["CELERY_WORKER_AMOUNT"].cluster == "worker"
    assert rows["NEXT_PUBLIC_COOKIE_DOMAIN"].cluster == "web"
    assert rows["DIFY_VERSION"].value == "1.13.3"
    assert rows["NGINX_BIND_ADDRESS"].action == "kept" and "binds 127.0.0.1" in rows["NGINX_BIND_ADDRESS"].why


def test_https_installs_keep_serving_every_address_and_certbot_paths_are_mapped():
    env = dict(OFFICIAL_ENV, NGINX_HTTPS_ENABLED="true", NGINX_ENABLE_CERTBOT_CHALLENGE="true",
               CERTBOT_DOMAIN="dify.example.com", NGINX_SSL_CERT_FILENAME="fullchain.pem",
               NGINX_SSL_CERT_KEY_FILENAME="privkey.pem")
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3"))
    assert rows["NGINX_BIND_ADDRESS"].value == "0.0.0.0"
    assert rows["NGINX_SSL_CERT_FILENAME"].value == "/etc/letsencrypt/live/dify.example.com/fullchain.pem"
    assert rows["NGINX_SSL_CERT_KEY_FILENAME"].value == "/etc/letsencrypt/live/dify.example.com/privkey.pem"


def test_pgvector_moves_into_its_own_database_when_the_name_is_taken():
    env = dict(OFFICIAL_ENV, VECTOR_STORE="pgvector", PGVECTOR_HOST="pgvector", PGVECTOR_DATABASE="dify",
               PGVECTOR_PASSWORD="difyai123456")
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3", vector_database="dify_vector"))
    assert rows["PGVECTOR_HOST"].value == "db_postgres" and rows["PGVECTOR_DATABASE"].value == "dify_vector"
    assert rows["PGVECTOR_PASSWORD"].action == "generated"  # coupled to DB_PASSWORD by env.init


def test_a_body_limit_below_the_uploads_is_cleared():
    env = dict(OFFICIAL_ENV, NGINX_CLIENT_MAX_BODY_SIZE="10M")
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3", largest_upload=100 * 1024 * 1024))
    assert rows["NGINX_CLIENT_MAX_BODY_SIZE"].value == "" and "413" in rows["NGINX_CLIENT_MAX_BODY_SIZE"].why


def test_public_secrets_are_flagged_with_what_rotating_breaks():
    flags = ad.public_secrets(OFFICIAL_ENV)
    assert any(f.startswith("DB_PASSWORD is Dify's public example value") and "nothing stored" in f for f in flags)
    env = dict(OFFICIAL_ENV, SECRET_KEY="sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U")
    secret = next(f for f in ad.public_secrets(env) if f.startswith("SECRET_KEY"))
    assert "everyone signs in again" in secret and "tool_oauth_system_clients" in secret


def test_the_mapped_env_replaces_in_place_and_appends_the_rest():
    text = "# header\nA=1\nexport B=2\nC=3\n"
    out = envfile.with_values(text, {"B": "two words", "D": "four"}, "Carried over")
    assert out == "# header\nA=1\nexport B='two words'\nC=3\n\n# Carried over\nD=four\n"


# ----------------------------------------------------------------------------- disk


def test_disk_needs_group_by_where_the_data_lands():
    parts = [ad.Part("PostgreSQL", "postgres", None, "pgdata", 100 * 2**20),
             ad.Part("Redis", "redis", None, "redisdata", 10 * 2**20),
             ad.Part("storage", "files", None, "storage", 50 * 2**20),
             ad.Part("certificates", "certs", None, "", 1000)]
    disks = {d.where: d for d in ad.disk_needs(parts, {"pgdata": 16 * 2**20}, ("/var/lib/docker", 10 * 2**30),
                                               ("/repo/var/s/adopt", 5 * 2**30), "s")}
    assert not disks["volume s-pgdata"].enough and disks["volume s-pgdata"].needs == ad.with_headroom(100 * 2**20)
    docker = disks["Docker's volumes (/var/lib/docker)"]
    assert docker.needs == ad.with_headroom(20 * 2**20 + 50 * 2**20) and docker.enough
    assert disks["host staging /repo/var/s/adopt"].needs == ad.with_headroom(10 * 2**20)


# ----------------------------------------------------------------------------- the plan and the refusals


def test_plan_task_prints_the_plan_and_changes_nothing(tmp_path, env_path, capsys, monkeypatch):
    folder = write_install(tmp_path / "docker")
    monkeypatch.setattr(ar, "target_problems", lambda *a, **k: [])
    c = install_context(env_path, folder)
    tasks.plan(c, from_=str(folder))
    out = capsys.readouterr().out
    assert "Dify version: 1.13.3" in out and "release set: 1.13.3" in out
    assert "vector store: Weaviate: its data folder" in out and "node1" in out
    assert "weaviate:" in out and "-> volume unit-weaviate-0" in out
    assert "private keys: 1 workspaces'" in out
    assert re.search(r"^  Redis: \S+ \(3\.0 MiB\) -> volume unit-redisdata", out, re.M), "the running Redis's dataset"
    assert OFFICIAL_ENV["SECRET_KEY"] not in out
    changing = re.compile(r"^docker (volume create|network create|create|update|compose -f)| (up|stop|start|down) ")
    assert not [cmd for cmd in commands(c) if changing.search(cmd)]
    assert all("--rm" in cmd for cmd in commands(c) if cmd.startswith("docker run"))  # read-only probes only


def test_plan_refuses_an_older_dify_in_one_line(tmp_path, env_path, monkeypatch):
    folder = write_install(tmp_path / "docker", api_image="langgenius/dify-api:1.9.2")
    c = install_context(env_path, folder, config=config_json(folder, api_image="langgenius/dify-api:1.9.2"))
    with pytest.raises(Exit, match=r"Dify 1\.9\.2 is older than 1\.13\.3.*upgrade the install with the official bundle"):
        tasks.plan(c, from_=str(folder))


def test_run_refuses_a_running_install_without_stop_and_a_stack_with_data(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    holds = {r"^docker volume inspect unit-pgdata": OK,
             r"docker run --rm --network none -v unit-pgdata:/v:ro": Result("free\t999999999999\nholds\t/v/pgdata\n")}
    c = install_context(env_path, folder, extra=holds)
    with pytest.raises(Exit) as exc:
        tasks.run(c, from_=str(folder), yes=True)
    assert "pre-flight found 2 problems" in str(exc.value)
    ran = commands(c)
    assert not [cmd for cmd in ran if " stop " in cmd or cmd.startswith(("docker volume create", "docker network create"))]


def test_run_refuses_too_little_disk(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    small = {r"^docker volume inspect unit-pgdata": OK,
             r"docker run --rm --network none -v unit-pgdata:/v:ro": Result("free\t16777216\n")}
    c = install_context(env_path, folder, ps="", extra=small)
    with pytest.raises(Exit, match=r"too little disk: volume unit-pgdata has 16\.0 MiB free, the move needs"):
        tasks.run(c, from_=str(folder), yes=True)


def test_sealed_private_keys_with_a_public_secret_key_are_refused(tmp_path, env_path):
    env = dict(OFFICIAL_ENV, SECRET_KEY="sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U")
    folder = write_install(tmp_path / "docker", env=env)
    (folder / "volumes/app/storage/privkeys/t1/private.pem").write_bytes(b"ENCPK1:sealed")
    c = install_context(env_path, folder, ps="")
    with pytest.raises(Exit, match="private keys are sealed with it"):
        tasks.run(c, from_=str(folder), yes=True)


# ----------------------------------------------------------------------------- pgmove


def test_move_argvs_attach_both_networks_and_pass_passwords_by_name():
    src = pgmove.Server("db_postgres", "5432", "postgres", "docker_default", "SRC_PGPASSWORD")
    dst = pgmove.Server("db_postgres", "5432", "postgres", "s-backend", "DST_PGPASSWORD")
    create, connect, start = pgmove.move_argvs("difyops-local/backup:1", "s-adopt-1", src, dst, "dify", "dify_adopt_1")
    assert create[:6] == ["docker", "create", "--name", "s-adopt-1", "--network", "docker_default"]
    assert "SRC_PGPASSWORD" in create and "DST_PGPASSWORD" in create
    assert not any("difyai" in arg for arg in create)
    assert create[-5:] == ["difyops-local/backup:1", "bash", "/difyops/pg-move.sh", "dify", "dify_adopt_1"]
    assert connect == ["docker", "network", "connect", "s-backend", "s-adopt-1"]
    assert start == ["docker", "start", "--attach", "s-adopt-1"]


MOVE_OUT = """source\ttable\tpublic.messages\t3\t1-2
source\tsequence\tpublic.messages_id_seq\t3\tt
meta\tsource_bytes\t8000000
meta\tmove_ms\t1500
target\ttable\tpublic.messages\t3\t1-2
target\tsequence\tpublic.messages_id_seq\t3\tt
"""


def test_parse_and_compare_a_move():
    moved = pgmove.parse(MOVE_OUT, "dify", "dify_adopt_1")
    assert moved.tables == {"public.messages": 3} and moved.source_bytes == 8000000 and moved.ms("move") == 1500
    assert pgmove.compare(moved) == []
    moved.target["table public.messages"] = ("3", "1-3")
    moved.target["table public.extra"] = ("1", "0-0")
    del moved.target["sequence public.messages_id_seq"]
    assert pgmove.compare(moved) == [
        "dify: sequence public.messages_id_seq is missing after the move",
        "dify: table public.extra appeared in the move (not in the source)",
        "dify: table public.messages: the same 3 rows, different content (hash 1-3 vs 1-2)",
    ]


def test_a_move_that_differs_raises_and_removes_its_container(env_path):
    bad = MOVE_OUT.replace("target\ttable\tpublic.messages\t3\t1-2", "target\ttable\tpublic.messages\t2\t1-1")
    c = mock_context(env_path, {r"^docker start --attach": Result(bad), r"^docker": OK})
    src = pgmove.Server("db_postgres", "5432", "postgres", "a", "SRC_PGPASSWORD")
    dst = pgmove.Server("db_postgres", "5432", "postgres", "b", "DST_PGPASSWORD")
    with pytest.raises(pgmove.MoveError, match="public.messages: 2 rows after the move, 3 in the source"):
        pgmove.move(c, "img", src, dst, "dify", "dify_adopt_1", {"SRC_PGPASSWORD": "p", "DST_PGPASSWORD": "q"}, "n")
    assert commands(c)[-1] == "docker rm --force n"


def test_rename_sql_is_one_transaction_with_the_current_databases_aside():
    sql = pgmove.rename_sql([("dify", "dify_pre_adopt_1", "dify_adopt_1"), ("dify_vector", None, "dify_vector_adopt_1")])
    assert sql.startswith("BEGIN;") and sql.endswith("COMMIT;")
    assert 'ALTER DATABASE "dify" RENAME TO "dify_pre_adopt_1"; ALTER DATABASE "dify_adopt_1" RENAME TO "dify";' in sql
    assert 'ALTER DATABASE "dify_vector_adopt_1" RENAME TO "dify_vector";' in sql
    assert sql.count("pg_terminate_backend") == 1


# ----------------------------------------------------------------------------- Redis and files


def test_redis_digests_compare_per_database():
    source, version, cutoff = ar.parse_digest("cutoff\t1700000000000\n0\t5\t1\tabc\n1\t2\t0\tdef\nredis_version\t6.2.14\n")
    assert source == {"0": (5, 1, "abc"), "1": (2, 0, "def")} and version == "6.2.14" and cutoff == "1700000000000"
    assert ar.compare_digests(source, {"0": (5, 0, "abc"), "1": (2, 0, "def")}) == []
    assert ar.compare_digests(source, {"0": (4, 0, "abc")}) == [
        "Redis db 0: 4 keys after the move, 5 in the source", "Redis db 1: 0 keys after the move, 2 in the source"]
    assert ar.compare_digests(source, {"0": (5, 0, "xyz"), "1": (2, 0, "def")}) == [
        "Redis db 0: the same 5 keys, different values"]


def test_parse_tree_and_plugin_packages():
    tree = ar.parse_tree("file\taa\t10\t./plugin/x.difypkg\nfile\tbb\t5\t./plugin_packages/y\nfile\tcc\t1\t./cwd/z\n"
                         "link\t../a\t./l\nsource_digest\td1\ncopy_digest\td1\n")
    assert tree["source_digest"] == tree["copy_digest"] == "d1" and tree["links"] == {"./l": "../a"}
    assert ar.plugin_packages(tree["files"]) == 2


def test_redis_password_comes_from_the_command_line(tmp_path, env_path):
    folder = write_install(tmp_path / "docker")
    install = ad.find_install(install_context(env_path, folder), folder)
    assert ar.redis_source(install).password == "difyai123456"
    assert ar.redis_source(install).network == "docker_default"


# ----------------------------------------------------------------------------- nothing half imported


def test_a_failure_before_the_switch_undoes_everything(tmp_path, env_path, monkeypatch):
    folder = write_install(tmp_path / "docker")
    c = install_context(env_path, folder, extra={
        r"^docker inspect --format": Result("always\n"),
        r"docker compose .* -p unit-data ps --format json": Result(""),
        r"^docker network inspect": fail_result(),
    }, rest={r"^docker": OK})
    settings = load_settings(c)
    plan = ad.make_plan(c, settings, folder, "difyops-local/backup:1", tmp_path / "stage")
    original_env = settings.env_file.read_text()
    monkeypatch.setattr(ar.running, "move_databases", lambda a: (a.scratch.update(dify="dify_adopt_1"),
                                                         (_ for _ in ()).throw(pgmove.MoveError("dify differs"))))
    monkeypatch.setattr("difyops.stack.up", lambda *a, **k: 0.0)
    with pytest.raises(ar.RunError, match="dify differs. Nothing was imported"):
        ar.adopt(c, settings, plan, "difyops-local/backup:1", original_env + "X=1\n", "1", say=lambda s: None)
    ran = commands(c)
    assert any('DROP DATABASE IF EXISTS "dify_adopt_1"' in cmd for cmd in ran)
    assert "docker volume rm unit-pgdata" in ran and "docker network rm unit-backend" in ran
    assert any(re.search(r"-p docker start api nginx plugin_daemon worker$", cmd) for cmd in ran)
    assert any(cmd.startswith("docker update --restart always docker-api-1") for cmd in ran)
    assert settings.env_file.read_text() == original_env, "the previous .env is back"
    assert not list(settings.env_file.parent.glob(".env.bak.*")), "the backup copy was put back, not left beside"


def test_weaviate_data_keeps_the_official_node_name():
    env = {k: v for k, v in OFFICIAL_ENV.items()}
    rows = by_key(ad.map_settings(env, TARGET_ENV, release="1.13.3", weaviate_data=True))
    assert rows["WEAVIATE_CLUSTER_HOSTNAME"].value == "node1" and rows["WEAVIATE_CLUSTER_HOSTNAME"].action == "changed"
    rows = by_key(ad.map_settings(dict(env, WEAVIATE_CLUSTER_HOSTNAME="wv-a"), TARGET_ENV, release="1.13.3",
                                  weaviate_data=True))
    assert rows["WEAVIATE_CLUSTER_HOSTNAME"].value == "wv-a"


def _compose_cli() -> bool:
    import shutil
    import subprocess

    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_cli() and os.environ.get("CI") != "true",
                    reason="needs the docker compose CLI (no daemon); runs in CI, where .ci/run installs it")
def test_the_weaviate_overlay_takes_the_adopted_node_name(tmp_path):
    import subprocess

    from difyops import paths
    env = tmp_path / ".env"
    env.write_text(paths.ENV_EXAMPLE.read_text() + "WEAVIATE_API_KEY=k\nDB_PASSWORD=p\nREDIS_PASSWORD=r\n"
                   "WEAVIATE_CLUSTER_HOSTNAME=node1\n")
    files = ["-f", str(paths.COMPOSE_DIR / "data.yml"), "-f", str(paths.COMPOSE_DIR / "data-weaviate.yml")]
    result = subprocess.run(["docker", "compose", *files, "--env-file", str(env), "config", "--format", "json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    node0 = doc["services"]["weaviate-0"]["environment"]
    assert node0["CLUSTER_HOSTNAME"] == "node1" and node0["RAFT_JOIN"] == "node1,weaviate-1,weaviate-2"
    assert doc["services"]["weaviate-1"]["environment"]["RAFT_JOIN"] == "node1,weaviate-1,weaviate-2"


def test_force_backs_the_stack_up_before_anything_changes(tmp_path, monkeypatch):
    env_path = write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1",
                         DIFYOPS_BACKUP_AGE_RECIPIENT="age1" + "q" * 58, DIFYOPS_BACKUP_DIR=str(tmp_path / "backups"))
    folder = write_install(tmp_path / "docker")
    holds = {r"^docker volume inspect unit-pgdata": OK,
             r"docker run --rm --network none -v unit-pgdata:/v:ro": Result("free\t999999999999\nholds\t/v/pgdata\n")}
    c = install_context(env_path, folder, extra=holds)
    order = []
    monkeypatch.setattr(ar, "preflight", lambda *a, **k: [])
    monkeypatch.setattr(tasks.bk, "create", lambda *a, **k: order.append("backup") or tmp_path / "unit-set")
    monkeypatch.setattr(ar, "adopt", lambda *a, **k: order.append("adopt") or {})
    tasks.run(c, from_=str(folder), stop=True, yes=True, force=True)
    assert order == ["backup", "adopt"]
    monkeypatch.setattr(tasks.bk, "create", lambda *a, **k: (_ for _ in ()).throw(tasks.bk.BackupError("no network")))
    order.clear()
    with pytest.raises(Exit, match="no network; --force takes a backup first, so nothing was changed"):
        tasks.run(c, from_=str(folder), stop=True, yes=True, force=True)
    assert order == []


def test_a_public_secret_key_is_kept_out_only_when_no_row_depends_on_it():
    public = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"
    empty = pgmove.parse("source\ttable\tpublic.tool_oauth_system_clients\t0\t0-0\n", "dify", "x")
    full = pgmove.parse("source\ttable\tpublic.trigger_oauth_system_clients\t2\t1-1\n", "dify", "x")
    assert ar.secret_key_problem(public, [empty]) is None
    assert ar.secret_key_problem("a-user-chosen-one", [full]) is None
    assert ar.secret_key_problem(public, [empty, full]).startswith(
        "SECRET_KEY is Dify's public example value and 2 rows of public.trigger_oauth_system_clients are encrypted")
