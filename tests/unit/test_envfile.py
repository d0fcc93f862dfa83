"""The .env generator and checker, without Docker."""

from __future__ import annotations


import pytest

from difyops import envfile, paths

EXAMPLE = paths.ENV_EXAMPLE.read_text()


def generated(**overrides):
    return envfile.values_of(envfile.generate(EXAMPLE, overrides))


def test_generated_env_passes_check_and_has_no_placeholder():
    env = generated()
    assert envfile.check(env) == []
    assert not [k for k, v in env.items() if envfile.PLACEHOLDER in v]


def test_every_secret_is_at_least_32_random_bytes_and_distinct():
    env = generated()
    values = [env[k] for k in envfile.SECRET_KEYS]
    assert all(len(bytes.fromhex(v)) >= 32 for v in values)
    assert len(set(values)) == len(values)
    assert generated()["SECRET_KEY"] != env["SECRET_KEY"]


def test_coupled_secrets_agree():
    env = generated()
    assert env["CODE_EXECUTION_API_KEY"] == env["SANDBOX_API_KEY"]
    assert env["PGVECTOR_PASSWORD"] == env["DB_PASSWORD"]
    assert envfile.broker_password(env["CELERY_BROKER_URL"]) == env["REDIS_PASSWORD"]
    assert env["CELERY_BROKER_URL"].endswith("@redis:6379/1")


def test_overrides_replace_values_and_append_new_keys():
    env = generated(EXPOSE_NGINX_PORT="8080", DIFYOPS_STACK="s1", NEW_THING="x")
    assert (env["EXPOSE_NGINX_PORT"], env["DIFYOPS_STACK"], env["NEW_THING"]) == ("8080", "s1", "x")


def test_check_reports_each_problem_on_its_own():
    env = generated()
    env["CODE_EXECUTION_API_KEY"] = "0" * 64
    env["CELERY_BROKER_URL"] = "redis://:wrong@redis:6379/1"
    env["SECRET_KEY"] = ""
    env["DB_PASSWORD"] = "difyai123456"
    env["PGVECTOR_PASSWORD"] = "difyai123456"
    problems = envfile.check(env)
    joined = "\n".join(problems)
    assert "CODE_EXECUTION_API_KEY differs from SANDBOX_API_KEY" in joined
    assert "CELERY_BROKER_URL does not carry REDIS_PASSWORD" in joined
    assert "SECRET_KEY is missing" in joined
    assert "DB_PASSWORD is a public default" in joined
    assert "CODE_EXECUTION_API_KEY is one character repeated: not a secret" in joined
    assert len(problems) == 6  # one line each (DB and PGVECTOR passwords are both public)


@pytest.mark.parametrize(
    "body, upload, ok",
    [("100M", "15", True), ("10M", "15", False), ("0", "500", True), ("16m", "15", True),
     ("1g", "1000", True), ("abc", "15", False)],
)
def test_body_limit_against_upload_limits(body, upload, ok):
    env = generated(NGINX_CLIENT_MAX_BODY_SIZE=body, UPLOAD_FILE_SIZE_LIMIT=upload,
                    UPLOAD_VIDEO_FILE_SIZE_LIMIT="1", UPLOAD_AUDIO_FILE_SIZE_LIMIT="1",
                    PLUGIN_MAX_PACKAGE_SIZE="1024")
    problems = [p for p in envfile.check(env) if "NGINX_CLIENT_MAX_BODY_SIZE" in p]
    assert (problems == []) is ok, problems


def test_pgvector_elsewhere_is_not_coupled():
    env = generated(PGVECTOR_HOST="vector.internal", PGVECTOR_PASSWORD="a" * 64)
    assert envfile.check(env) == []
