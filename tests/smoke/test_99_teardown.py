"""Smoke, last: taking the stack down leaves no container, network or volume behind."""

from smokelib import check


def test_teardown_leaves_nothing(stack):
    left = stack.teardown()
    check("teardown leaves no container, network or volume", not any(left.values()), left)
