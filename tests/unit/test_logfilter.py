"""prod.logs --level: which lines pass."""

from __future__ import annotations

import io

import pytest
from conftest import OK, mock_context
from invoke.exceptions import Exit

from difyops import logfilter
from difyops.tasks import prod


@pytest.mark.parametrize(
    "line, level",
    [('api-1  | {"severity": "ERROR", "message": "boom"}', 40),
     ('api-1  | {"level": "info", "msg": "ok"}', 20),
     ("worker-1  | [2026-11-25 08:00:00,000: WARNING/MainProcess] slow", 30),
     ("nginx-1  | 172.30.0.1 - - GET / 200", None)],
)
def test_line_level(line, level):
    assert logfilter.line_level(line) == level


def test_filter_keeps_errors_with_their_continuation_lines_and_drops_the_rest():
    out = io.StringIO()
    stream = logfilter.LevelFilter(out, logfilter.threshold("error"))
    stream.write('api-1  | {"severity": "INFO", "message": "hi"}\napi-1  | ERROR boom\n  Trace')
    stream.write("back line\napi-1  | INFO fine\n")
    stream.flush()
    assert out.getvalue() == "api-1  | ERROR boom\n  Traceback line\n"


def test_logs_refuses_an_unknown_level(env_path):
    c = mock_context(env_path, {r".": OK})
    with pytest.raises(Exit, match="unknown level 'loud'"):
        prod.logs(c, "api", level="loud")
    assert not c.run.call_args_list


def test_logs_with_a_level_streams_through_the_filter(env_path):
    c = mock_context(env_path, {r".": OK})
    prod.logs(c, "api", level="warning", since="10m")
    call = c.run.call_args_list[-1]
    assert " logs --no-color --tail 200 --since 10m" in call.args[0]
    assert isinstance(call.kwargs["out_stream"], logfilter.LevelFilter)
