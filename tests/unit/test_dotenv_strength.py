"""difyops.dotenv.weakness: why a value cannot be a secret, without repeating it."""

from __future__ import annotations

import pytest

from difyops import dotenv, envfile


@pytest.mark.parametrize("value, reason", [
    ("", "is empty"),
    ("short", "is 5 characters long; a secret needs at least 32"),
    ("x" * 31, "is 31 characters long; a secret needs at least 32"),
    ("a" * 64, "is one character repeated"),
    ("ab" * 20, "is a piece of 2 characters repeated"),
    ("abc" * 11, "is a piece of 3 characters repeated"),  # 33 characters, the last piece cut short
    ("12345678" * 4, "is a piece of 8 characters repeated"),
    ("difyai123456", "is a public default from Dify's example file"),
    ("sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U", "is a public default from Dify's example file"),
])
def test_weak_values_are_named_with_the_reason(value, reason):
    assert dotenv.weakness(value) == reason


@pytest.mark.parametrize("value", [
    "123456789" * 4,  # a piece longer than 8 repeated: allowed, length and variety suffice
    "correct horse battery staple and more",
    "Zm9vYmFyYmF6cXV4cXV1eHF1dXhmb29iYXI=",
])
def test_long_varied_values_pass(value):
    assert dotenv.weakness(value) is None


def test_generated_secrets_always_pass():
    assert all(dotenv.weakness(envfile.new_secret()) is None for _ in range(200))


def test_reasons_never_repeat_the_value():
    for value in ("hunter2", "difyai123456", "q" * 40, "pw" * 20):
        assert value not in dotenv.weakness(value)


def test_the_public_defaults_are_the_ones_envfile_checks():
    assert dotenv.KNOWN_PUBLIC_DEFAULTS == frozenset(envfile.KNOWN_PUBLIC_DEFAULTS)
