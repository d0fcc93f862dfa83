"""difyops.dotenv's reader on its own: Compose's values (recorded in dotenv_cases and checked
against Compose in test_dotenv_compose), the line and raw text of each key, one-line refusals,
and no traceback whatever the input."""

from __future__ import annotations

import pytest
from dotenv_cases import CASES, MULTI, STRICTER, Case, files_of
from hypothesis import given, settings
from hypothesis import strategies as st

from difyops import dotenv
from difyops.dotenv import template
from difyops.errors import DifyopsError


def read_case(case: Case) -> dotenv.ComposeEnv:
    texts = files_of(case)
    return dotenv.from_texts(texts, case.environ, [f"case{i}.env" for i in range(len(texts))])


@pytest.mark.parametrize("case", [c for c in CASES + MULTI if c.values is not None], ids=lambda c: c.id)
def test_reads_what_compose_reads(case):
    env = read_case(case)
    assert env.env_file == case.values
    for key, value in case.values.items():
        assert env.project.get(key) == case.project.get(key, value), key


@pytest.mark.parametrize("case", [c for c in CASES + MULTI if c.values is None] + STRICTER, ids=lambda c: c.id)
def test_refuses_in_one_line_naming_the_line(case):
    with pytest.raises(dotenv.DotenvError) as refused:
        read_case(case)
    error = refused.value
    assert isinstance(error, DifyopsError)
    assert error.line == case.refusal_line
    assert f"line {case.refusal_line}: " in str(error)
    assert "\n" not in str(error) and str(error).startswith("case")


def test_refusals_do_not_show_the_value():
    secret = "Zq9-very-secret"
    for text in (f"A=${{{secret}\n", f"A=x${{B:{secret}}}\n", f'A="{secret}\n', f"A {secret}=1\n",
                 f"A={secret}\x00\n", f"B={secret}\nA=${{B:-${{C:?}}}}\n"):
        with pytest.raises(dotenv.DotenvError) as refused:
            dotenv.parse(text, {})
        assert secret not in str(refused.value), str(refused.value)


SAMPLE = b"""# Dify settings
export SECRET_KEY=abc123   # generated

DB_PASSWORD='p$ss # not a comment'
MULTI="first
second"
CELERY_BROKER_URL=redis://:${DB_PASSWORD}@redis:6379/1
DB_PASSWORD=final
BARE
"""


def test_each_key_has_its_line_and_raw_text():
    env = dotenv.parse(SAMPLE, {"BARE": "from-env"})
    assert env.line("SECRET_KEY") == 2 and env.raw("SECRET_KEY") == "abc123"
    assert env.values["MULTI"] == "first\nsecond"
    multi = env.entry("MULTI")
    assert (multi.line, multi.last_line, multi.quote, multi.raw) == (5, 6, '"', '"first\nsecond"')
    assert env.values["CELERY_BROKER_URL"] == "redis://:p$ss # not a comment@redis:6379/1"
    assert env.raw("CELERY_BROKER_URL") == "redis://:${DB_PASSWORD}@redis:6379/1"
    assert env.line("DB_PASSWORD") == 8 and env.values["DB_PASSWORD"] == "final"
    assert env.duplicates() == {"DB_PASSWORD": [4, 8]}
    assert env.entry("BARE").raw is None and env.values["BARE"] == "from-env" and env.line("BARE") == 9
    for entry in env.entries:
        if entry.raw is not None:
            assert env.text[entry.value_start:entry.value_end] == entry.raw


def test_a_bare_name_the_environment_lacks_is_unset_but_listed():
    env = dotenv.parse(b"BARE\n", {})
    assert env.values == {} and [e.key for e in env.entries] == ["BARE"] and env.line("BARE") is None


def test_unset_references_are_recorded_as_compose_warns_of_them():
    env = dotenv.parse(b"A=${NOPE}/$ALSO_NOT:${SET}\nB=${NOPE:-fine}\n", {"SET": "1"})
    assert env.values["A"] == "/:1"
    assert env.entry("A").unset == ("NOPE", "ALSO_NOT")
    assert env.entry("B").unset == ()


def test_line_numbers_count_crlf_and_multi_line_values():
    with pytest.raises(dotenv.DotenvError) as refused:
        dotenv.parse(b"A=1\r\nB='x\r\ny'\r\n\r\nC=${\r\n", {})
    assert refused.value.line == 5


def test_byte_order_mark_is_dropped_and_remembered():
    env = dotenv.parse(b"\xef\xbb\xbfA=1\n", {})
    assert env.values == {"A": "1"} and env.bom and env.text == "A=1\n"


def test_utf16_is_refused_with_a_hint():
    with pytest.raises(dotenv.DotenvError, match="UTF-16"):
        dotenv.parse("A=1\n".encode("utf-16"), {})


def test_missing_and_directory_paths_are_one_line_refusals(tmp_path):
    with pytest.raises(dotenv.DotenvError, match="does not exist"):
        dotenv.read(tmp_path / "nope.env")
    with pytest.raises(dotenv.DotenvError, match="is a directory"):
        dotenv.read(tmp_path)


def test_load_reads_env_files_in_order(tmp_path):
    (tmp_path / "size.env").write_text("API_MEM=1g\nAPI_CPU=1\n")
    (tmp_path / ".env").write_text("API_MEM=2g\nLIMIT=${API_CPU}\n")
    env = dotenv.load([tmp_path / "size.env", tmp_path / ".env"], {"API_CPU": "4"})
    assert env.project["API_MEM"] == "2g" and env.project["LIMIT"] == "4" and env.project["API_CPU"] == "4"
    assert env.env_file == {"API_MEM": "2g", "LIMIT": "4"}


def test_disagreements_name_the_line_and_cause_not_the_value():
    env = dotenv.from_texts([b"X=file-secret\nA=1\nB=${A}\nA=2\n"], {"X": "shell-secret"})
    problems = dotenv.disagreements(env, {"X": "shell-secret"})
    assert len(problems) == 2
    assert problems[0].startswith("env file 1, line 1: X: the process environment sets X")
    assert problems[1].startswith("env file 1, line 3: B: uses a variable that is set again further down")
    assert not any("secret" in p for p in problems)
    assert dotenv.disagreements(dotenv.from_texts([b"A=1\nB=${A}\n"], {}), {}) == []


def test_env_file_reading_can_refuse_what_the_first_reading_took():
    # Top to bottom B is set when A reads it; in the project environment B ends up empty.
    text = b"B=x\nA=${B:?}\nB=\n"
    assert dotenv.parse(text, {}).values == {"B": "", "A": "x"}
    with pytest.raises(dotenv.DotenvError, match="line 2: A: required variable B"):
        dotenv.from_texts([text], {})


def test_template_follows_the_brace_count_quirk_and_cuts_after_the_close():
    lookup = {"S": "s"}.get

    def sub(text):
        return template.substitute(text, lambda k: (lookup(k) or "", lookup(k) is not None)).value

    assert sub("${U:-${S}}x}") == "sx}"
    assert sub("${S:+[${S}]}") == "[s]"
    assert sub("${U:-a}${U:-b}") == "ab"
    assert sub("${U:-{x}}") == "{x}"


# --- no input of any kind ends in a traceback ---------------------------------------------------

_PIECES = ["A", "B", "_", "=", ":", " ", "\t", "\n", "\r\n", "\r", "#", " #", "'", '"', "\\", "$", "$$", "{", "}",
           "${A}", "${A:-", "${B?", "${", "export ", "\\n", "\\0101", "\x00", "\ufeff", "\u00a0", "\u3000", "\u00e9",
           "\ud800", "\U0001f389", "-", ".", "[", "]", "0"]


def _never_a_traceback(data, environ):
    try:
        env = dotenv.from_texts([data], environ)
    except dotenv.DotenvError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(v, str) for v in env.env_file.values())


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=200), st.dictionaries(st.sampled_from(["A", "B", "PATH"]), st.text(max_size=5)))
def test_random_bytes_never_end_in_a_traceback(data, environ):
    _never_a_traceback(data, environ)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=60).map("".join))
def test_random_tricky_text_never_ends_in_a_traceback(text):
    _never_a_traceback(text, {"A": "a"})
    if "\ud800" not in text:
        _never_a_traceback(text.encode("utf-8"), {})


@pytest.mark.parametrize("data", [
    b"A=" + b"x" * 2_000_000 + b"\n",
    b"A=" + b"${U:-x}" * 20_000 + b"\n",
    b"A=" + b"${U:-" * 10_000 + b"x" + b"}" * 10_000 + b"\n",
    b"A=" + b"${U:-" * 100_000 + b"\n",
    b'A="' + b"x" * 1_000_000,
    b"#" * 1_000_000,
    b"\n" * 1_000_000 + b"A",
    b"\r\n".join(b"K%d='v'" % i for i in range(10_000)),
], ids=["2MB-value", "20k-defaults", "10k-nesting", "100k-unclosed", "1MB-unterminated", "1MB-comment",
        "1M-blank-lines", "10k-crlf-keys"])
def test_huge_inputs_end_in_values_or_one_line(data):
    _never_a_traceback(data, {})
