"""Consumer lag in messages and seconds, the stall rule, and /ready while stalled."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams import app as app_module
from streams.broker import free_port
from streams.lag import LagTracker
from streams.settings import Settings

TP = ("requests", 0)


def test_nothing_waiting_is_zero_messages_and_zero_seconds() -> None:
    lag = LagTracker()
    lag.observe(TP, end=10, committed=10, now=100.0)
    lag.observe(TP, end=10, committed=10, now=102.0)
    assert lag.lag(TP) == lag.snapshot()[0]
    assert (lag.lag(TP).messages, lag.lag(TP).seconds) == (0, 0.0)


def test_lag_seconds_is_the_age_of_the_oldest_uncommitted_record() -> None:
    lag = LagTracker()
    lag.observe(TP, end=10, committed=10, now=100.0)  # idle for a long time
    lag.observe(TP, end=10, committed=10, now=500.0)
    lag.observe(TP, end=30, committed=10, now=502.0)  # 20 records arrived in (500, 502]
    lag.observe(TP, end=30, committed=10, now=510.0)  # none answered since
    now = lag.lag(TP)
    assert now.messages == 20
    # offset 10 was appended just after 500 (interpolated: 500.1), not at 100
    assert now.seconds == pytest.approx(510.0 - 500.1)


def test_an_older_backlog_than_the_history_reads_as_at_least_that_old() -> None:
    lag = LagTracker(history_s=60.0)
    for second in range(0, 200, 2):
        lag.observe(TP, end=1000 + second, committed=5, now=float(second))
    behind = lag.lag(TP)
    assert behind.messages == 1000 + 198 - 5
    assert 60.0 <= behind.seconds <= 64.0


def test_progress_interpolates_between_samples() -> None:
    lag = LagTracker()
    lag.observe(TP, end=0, committed=0, now=0.0)
    lag.observe(TP, end=100, committed=0, now=10.0)  # 100 records over 10 s
    lag.observe(TP, end=100, committed=50, now=10.0)
    # record 50 was appended about 5.1 s in, so it is ~4.9 s old at 10 s
    assert lag.lag(TP).seconds == pytest.approx(4.9)


def test_stalled_only_with_records_waiting_and_no_commit_for_the_timeout() -> None:
    lag = LagTracker()
    lag.observe(TP, end=5, committed=5, now=0.0)
    lag.observe(TP, end=5, committed=5, now=100.0)
    assert lag.stalled(30.0, now=100.0) is None  # idle, nothing waiting
    lag.observe(TP, end=8, committed=5, now=102.0)
    lag.observe(TP, end=9, committed=6, now=120.0)  # progress
    assert lag.stalled(30.0, now=140.0) is None
    lag.observe(TP, end=9, committed=6, now=151.0)
    reason = lag.stalled(30.0, now=151.0)
    assert reason is not None
    assert "requests[0] has 3 requests waiting" in reason
    assert "KINFER_CONSUMER_STALL_TIMEOUT_S=30" in reason
    lag.observe(TP, end=9, committed=9, now=152.0)  # caught up
    assert lag.stalled(30.0, now=152.0) is None


def test_revoked_partitions_are_forgotten() -> None:
    lag = LagTracker()
    lag.observe(TP, end=9, committed=1, now=0.0)
    lag.observe(("requests", 1), end=9, committed=1, now=0.0)
    lag.retain([("requests", 1)])
    assert [(p.topic, p.partition) for p in lag.snapshot()] == [("requests", 1)]
    assert lag.stalled(1.0, now=100.0) is not None
    lag.retain([])
    assert lag.stalled(1.0, now=100.0) is None


def test_ready_turns_false_while_the_consumer_is_stalled(
    unique_name: Callable[[str], str],
) -> None:
    settings = Settings(
        app_id=unique_name("app"), web_port=free_port(), consumer_stall_timeout_s=5.0
    )
    app = app_module.create_app(settings)
    app.ready = True
    assert app.readiness() == (True, {})
    app.lag.observe((settings.request_topic, 2), end=40, committed=10, now=0.0)
    ready, detail = app.readiness()
    assert not ready
    assert "the consumer is stalled" in detail["reason"]
    assert f"{settings.request_topic}[2]" in detail["reason"]
    assert not app.is_ready()
