"""One reading of .env, Compose's: the settings deploy uses, env.check, prod.check and pre-flight
all see what the containers get, and a file Compose refuses is one line naming the line."""

from __future__ import annotations

import pytest
from conftest import mock_context, write_env
from invoke.exceptions import Exit

from difyops import config, envfile, probes
from difyops.tasks import env as env_tasks
from difyops.tasks import prod


def append(path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_a_broker_url_built_from_redis_password_is_no_mismatch(env_path, capsys):
    # Compose interpolates ${REDIS_PASSWORD}: the workers get the right password.
    append(env_path, "CELERY_BROKER_URL=redis://:${REDIS_PASSWORD}@redis:6379/1\n")
    settings = config.load_settings(mock_context(env_path, {}))
    assert settings.env["CELERY_BROKER_URL"] == f"redis://:{settings.env['REDIS_PASSWORD']}@redis:6379/1"
    assert probes.env_problems(settings) == []
    env_tasks.check(mock_context(env_path, {}))
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_a_wrong_broker_password_is_still_one(env_path):
    append(env_path, "CELERY_BROKER_URL=redis://:${DB_PASSWORD}@redis:6379/1\n")
    problems = probes.env_problems(config.load_settings(mock_context(env_path, {})))
    assert problems == ["CELERY_BROKER_URL does not carry REDIS_PASSWORD: workers could not reach the broker"]


QUOTED = ('MAIL_DEFAULT_SEND_FROM="Dify \\"team\\" <no-reply@example.com>"\n'
          "INIT_NOTE='it\\'s'\n"
          'NOTE_ESCAPES="tab\\there\\\\ costs \\$5\\nnext"\n'
          "PGVECTOR_PASSWORD=${DB_PASSWORD}\n")
EXPECTED = {"MAIL_DEFAULT_SEND_FROM": 'Dify "team" <no-reply@example.com>', "INIT_NOTE": "it's",
            "NOTE_ESCAPES": "tab\there\\ costs $5\nnext"}


def test_escaped_quotes_and_double_quote_escapes_read_as_compose_reads_them(env_path):
    append(env_path, QUOTED)
    settings = config.load_settings(mock_context(env_path, {}))
    read = envfile.read(env_path)
    for key, value in EXPECTED.items():
        assert settings.env[key] == value, key
        assert read[key] == value, key
    assert settings.env["PGVECTOR_PASSWORD"] == settings.env["DB_PASSWORD"]
    assert read["PGVECTOR_PASSWORD"] == settings.env["DB_PASSWORD"]


@pytest.mark.parametrize("tail, line, reason", [
    (b'BROKEN="never closed\n', "never closed", "BROKEN"),
    (b"BROKEN=\xff\xfe\n", "not UTF-8", "0xff"),
    (b"MY KEY=1\n", "whitespace", "'MY'"),
    (b"A=${UNSET:?must be set}\n", "must be set", ""),
], ids=["unterminated-quote", "not-utf8", "space-in-name", "required-missing"])
@pytest.mark.parametrize("task", [env_tasks.check, prod.check, prod.status, prod.deploy],
                         ids=["env.check", "prod.check", "prod.status", "prod.deploy"])
def test_a_file_compose_refuses_is_one_line_naming_the_line(env_path, tail, line, reason, task):
    lines = env_path.read_bytes().count(b"\n")
    with open(env_path, "ab") as handle:
        handle.write(tail)
    with pytest.raises(Exit) as raised:
        task(mock_context(env_path, {}))  # no command may run: the file is refused first
    message = str(raised.value.message)
    assert "\n" not in message and message.startswith("error: ")
    assert f"line {lines + 1}" in message and line in message and reason in message


def test_env_check_flags_a_weak_secret(env_path):
    append(env_path, "SECRET_KEY=" + "ab" * 20 + "\n")
    with pytest.raises(Exit, match=r"1 problem\(s\)"):
        env_tasks.check(mock_context(env_path, {}))


def test_env_check_flags_a_disagreement_between_composes_two_readings(env_path, capsys):
    # ${MAIL_TYPE} in a compose file takes the value above; env_file: services the final one.
    append(env_path, "MAIL_TYPE=smtp\nMAIL_NOTE=${MAIL_TYPE}\nMAIL_TYPE=resend\n")
    with pytest.raises(Exit, match=r"1 problem\(s\)"):
        env_tasks.check(mock_context(env_path, {}))
    assert "MAIL_NOTE: uses a variable that is set again further down" in capsys.readouterr().err


def test_env_init_force_over_a_refused_file_keeps_it_and_writes_a_new_one(tmp_path):
    target = tmp_path / ".env"
    target.write_bytes(b'BROKEN="never closed\n')
    env_tasks.init(mock_context(target, {}), force=True)
    backups = list(tmp_path.glob(".env.bak.*"))
    assert [b.read_bytes() for b in backups] == [b'BROKEN="never closed\n']
    assert envfile.check(envfile.read(target)) == []


def test_generate_writes_values_that_read_back_exactly(tmp_path):
    tricky = {"MAIL_DEFAULT_SEND_FROM": 'Dify "team" <a@b.c> # not a comment', "INIT_NOTE": "pa$$word ${X}"}
    path = write_env(tmp_path / ".env", **tricky)
    read = envfile.read(path)
    assert {k: read[k] for k in tricky} == tricky
