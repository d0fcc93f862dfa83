"""difyops.dotenv against the real Compose CLI (`docker compose config`, no engine needed).

Every case of dotenv_cases is run through Compose: its record must be what Compose says, and the
reader must agree with Compose on every value, both as `${KEY}` (project environment) and as
`env_file:` (what a container gets), and on which files are refused. The writer's output is read
back by Compose. And the project's settings (config.load_settings, envfile.read) read every case
as the records say.

Where the `docker compose` CLI is missing these fail under CI=true and skip otherwise.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import compose_cli
import pytest
from dotenv_cases import CASES, MULTI, STRICTER, Case, files_of

from difyops import config, dotenv, envfile

ALL = CASES + STRICTER + MULTI


def _ours(case: Case, environ: dict[str, str]) -> dotenv.ComposeEnv:
    texts = files_of(case)
    return dotenv.from_texts(texts, environ, [f"case{i}.env" for i in range(len(texts))])


def _keys(case: Case, environ: dict[str, str]) -> list[str]:
    keys = set(case.values or {}) | set(case.project)
    try:
        ours = _ours(case, environ)
        keys |= {k for f in ours.files for k in f.values}
    except dotenv.DotenvError:
        pass
    return sorted(keys)


@pytest.fixture(scope="module")
def compose():
    """Compose's reading of every case, one call each (about 60 ms of CPU), one per core at a time."""
    compose_cli.require_compose()

    def run(case: Case) -> compose_cli.ComposeRead:
        environ = compose_cli.process_environment(case.environ)
        return compose_cli.read(files_of(case), _keys(case, environ), case.environ)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip([c.id for c in ALL], pool.map(run, ALL), strict=True))


@pytest.mark.parametrize("case", CASES + MULTI, ids=lambda c: c.id)
def test_the_case_records_what_compose_does(compose, case):
    got = compose[case.id]
    if case.values is None:
        # A Compose on compose-go 2.10.1 or later takes what the older ones refuse.
        assert got.error or case.newer_compose_takes, f"Compose took a file recorded as refused: {got.env_file}"
        return
    assert got.error is None, got.error
    assert got.env_file == case.values
    for key, value in got.project.items():
        assert value == case.project.get(key, case.values.get(key)), key


@pytest.mark.parametrize("case", CASES + MULTI, ids=lambda c: c.id)
def test_reader_agrees_with_compose(compose, case):
    got = compose[case.id]
    environ = compose_cli.process_environment(case.environ)
    if got.error or case.newer_compose_takes:
        with pytest.raises(dotenv.DotenvError):
            _ours(case, environ)
        return
    ours = _ours(case, environ)
    assert ours.env_file == got.env_file
    assert {k: ours.project.get(k) for k in got.project} == got.project


@pytest.mark.parametrize("case", STRICTER, ids=lambda c: c.id)
def test_stricter_than_compose_where_compose_takes_garbage(compose, case):
    got = compose[case.id]
    assert got.error is None and got.env_file == case.values, "Compose no longer takes this file"
    with pytest.raises(dotenv.DotenvError) as refused:
        _ours(case, compose_cli.process_environment(case.environ))
    assert refused.value.line == case.refusal_line


# Characters that need care: quotes, backslashes, $ and braces, # and blanks, line breaks, Unicode.
_NASTY = list("'\"\\$${}#  \t\n\r=:;!&*?-_./@%+~^|<>()[]`") + ["${A}", "$$", "\\n", "\\$", " #", "\u00e9",
                                                           "\u4e2d", "\u00a0", "\u3000", "\U0001f389"]


def _nasty_values(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    values = ["", " ", "#", "'", '"', "\\", "$", "$$", "${A}", "a\\", " lead", "trail ", "x\ny", "#x", "a #b"]
    while len(values) < count:
        values.append("".join(rng.choice(_NASTY + ["a", "Z", "0"]) for _ in range(rng.randint(1, 24))))
    return values


def test_writer_output_reads_back_exactly_through_compose(tmp_path):
    compose_cli.require_compose()
    values = _nasty_values(300, seed=13)
    start = dotenv.parse(b"# keep me\nA=old # note\n\nexport B='x'\nC\n", {})
    changes = {"A": values[0], "B": values[1], "C": values[2]}
    changes.update({f"V{i}": v for i, v in enumerate(values[3:])})
    text = dotenv.update(start, changes, comment="added by the test")
    assert text.startswith("# keep me\n")
    got = compose_cli.read([text.encode()], list(changes), {})
    assert got.error is None, got.error
    assert got.env_file == changes
    assert got.project == changes


# --- the project's one reading, against the recorded Compose values --------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if c.values is not None], ids=lambda c: c.id)
def test_the_settings_read_every_case_as_compose_does(case, tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_bytes(case.text)
    monkeypatch.setattr(config, "process_environment", lambda: dict(case.environ))
    settings = config.load_settings(None, path)
    project = {key: case.project.get(key, value) for key, value in case.values.items()}
    assert settings.env == project
    assert settings.dify_values() == case.values
    assert envfile.read(path, case.environ) == project


# One file each (env-files-versions-disagree needs two: the reader's own tests cover it).
REFUSED = [c for c in CASES + STRICTER if (c.values is None or c in STRICTER) and len(files_of(c)) == 1]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_the_settings_refuse_a_file_in_one_line_naming_its_line(case, tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(case.text)
    with pytest.raises(dotenv.DotenvError) as raised:
        config.load_settings(None, path)
    assert raised.value.line == case.refusal_line
    assert "\n" not in str(raised.value)


def test_a_missing_compose_cli_skips_here_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(compose_cli.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="they run in CI"):
        compose_cli.require_compose()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Compose v2 CLI"):
        compose_cli.require_compose()
