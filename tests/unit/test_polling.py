"""The one polling loop: bounded in time and in count, returns the first truthy answer."""

from __future__ import annotations

from difyops import polling


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_returns_the_first_truthy_answer_without_waiting_more():
    fake, answers = FakeClock(), iter([None, "", "ready", "late"])
    got = polling.until(lambda: next(answers), 10, 2, clock=fake.clock, sleep=fake.sleep)
    assert got == "ready" and fake.slept == [2, 2]


def test_gives_up_at_the_deadline_and_never_sleeps_past_it():
    fake, calls = FakeClock(), []
    got = polling.until(lambda: calls.append(fake.now), 5, 2, clock=fake.clock, sleep=fake.sleep)
    assert got is None
    assert calls == [100.0, 102.0, 104.0, 105.0] and sum(fake.slept) == 5


def test_bounded_in_count_when_the_clock_stands_still():
    calls = []
    got = polling.until(lambda: calls.append(1), 3, 1, clock=lambda: 0.0, sleep=lambda s: None)
    assert got is None and len(calls) == 4


def test_runs_once_with_no_time_left():
    calls = []
    assert polling.until(lambda: calls.append(1) or True, 0, 1) is True and len(calls) == 1
