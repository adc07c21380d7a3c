"""The lag monitor's judgement of a growing lag (pure: samples in, verdict out)."""

from shared.lag import LagMonitor


def test_a_lag_is_growing_when_it_rose_over_the_whole_window_without_reaching_zero():
    monitor = LagMonitor(relay=None, broker=None, window=60)  # type: ignore[arg-type]  # record/growing only
    samples = [(0, 2, 4), (20, 5, 0), (40, 9, 6), (55, 12, 9)]  # (seconds, relay lag, consumer lag)
    for at_second, relay, consumer in samples:
        monitor.record(at_second, {"relay": relay, "consumer group g": consumer})
    assert monitor.growing() == []  # not watched for a whole window yet
    monitor.record(61, {"relay": 14, "consumer group g": 11})
    # The consumer's lag reached zero in the window: it keeps up between bursts.
    assert monitor.growing() == ["relay lag grew from 2 to 14 in 60 s without reaching 0"]
    monitor.record(90, {"relay": 3, "consumer group g": 20})
    assert monitor.growing() == []  # the relay came down; the consumer was at zero when this window began
    monitor.record(100, {"relay": 3, "consumer group g": 25})
    assert monitor.growing() == ["consumer group g lag grew from 6 to 25 in 60 s without reaching 0"]
