"""The benchmark's own arithmetic (tests/perf): what it reports must be right before it is believed."""

from __future__ import annotations

import os

from tests.perf.cluster import loop_lag_p99_ms
from tests.perf.machine import peak_rate, process_seconds
from tests.perf.report import Figures, ratios, table


def test_peak_rate_is_the_busiest_second_of_a_sliding_window():
    # 3 requests in [0, 1), then 4 within 0.9 s straddling whole seconds: 1.5, 1.9, 2.2, 2.4.
    assert peak_rate([0.0, 0.4, 0.8, 1.5, 1.9, 2.2, 2.4, 3.6]) == 4
    assert peak_rate([0.0, 1.0, 2.0]) == 1  # a window is [t, t + 1 s)
    assert peak_rate([]) == 0


def test_loop_lag_comes_from_the_last_line_of_the_process_s_own_log():
    log = (
        "INFO bot.metrics: event loop lag: median 1.0 ms, p99 142.0 ms, max 200.0 ms over 10 samples\n"
        "INFO bot.main: started again\n"
        "INFO bot.metrics: event loop lag: median 0.5 ms, p99 31.5 ms, max 40.0 ms over 900 samples\n"
    )
    assert loop_lag_p99_ms(log) == 31.5
    assert loop_lag_p99_ms("killed before it could say") is None


def test_process_cpu_is_read_from_proc():
    assert (process_seconds(os.getpid()) or 0.0) > 0.0
    assert process_seconds(2**22 + 1) is None  # above Linux's pid limit: no such process


def test_runs_show_lowest_and_highest_and_ratios_use_their_own_run_s_sdk():
    def row(client: str, run: int, overhead: float, polls: int) -> Figures:
        return Figures(client, 100, "lognormal", run, overheads=[overhead] * 3, polls=[polls] * 3, submits=[1] * 3)

    rows = [
        row("wavespeed SDK", 1, 0.600, 6),
        row("bot (poll, sqlite)", 1, 0.240, 5),
        row("wavespeed SDK", 2, 0.500, 5),
        row("bot (poll, sqlite)", 2, 0.260, 5),
    ]
    line = next(line for line in table(rows).splitlines() if "bot (poll" in line)
    assert line.startswith("| 100 | bot (poll, sqlite) | 240-260 ms | 240-260 ms | 5.00 |")
    # Run 1: 0.24 / 0.60 = 0.40 at 5/6 = 0.83; run 2: 0.26 / 0.50 = 0.52 at 1.00: the target (0.5) missed.
    assert ratios(rows) == (
        "lognormal, 100 jobs, bot (poll, sqlite): overhead median / SDK = 0.40-0.52, polls per job / SDK = "
        "0.83-1.00 (target <= 0.5 at <= 1.0: NOT met)"
    )
