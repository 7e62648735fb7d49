"""The benchmark's figures per row and how they are printed: one table per inference-time
distribution, each cell the lowest and highest of the runs, then the ratios to the SDK's row of
the same run and the issues' targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.perf.cluster import BurstCost, Takeover
from tests.perf.machine import Load

# Issue 15, poll mode, against the SDK's row of the same run: overhead median at most this share of
# the SDK's, at no more polls per job than the SDK.
OVERHEAD_TARGET = {"lognormal": 0.5, "uniform": 0.75}


@dataclass
class Figures:
    client: str
    jobs: int
    distribution: str = "uniform"
    run: int = 1
    overheads: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    submits: list[int] = field(default_factory=list)
    first_responses: list[float] = field(default_factory=list)
    loop_lags_p99_ms: list[float | None] = field(default_factory=list)  # one per bot process
    peak_rss_mb: list[float | None] = field(default_factory=list)  # one per bot process
    peak_polls_per_s: int = 0
    peak_requests_per_s: int = 0
    cap: int | None = None
    max_in_flight: int | None = None
    takeover: Takeover | None = None
    burst: BurstCost | None = None
    failed: int = 0
    harness_lag: str = ""
    load: Load = field(default_factory=Load)

    @property
    def is_bot(self) -> bool:
        return self.client.startswith("bot")

    @property
    def overhead_median(self) -> float:
        return statistics.median(self.overheads) if self.overheads else float("nan")

    @property
    def polls_per_job(self) -> float:
        return statistics.mean(self.polls) if self.polls else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 1000:.0f} ms"


def each(values: list[float | None], unit: str) -> str:
    """The largest value, then each process's when there are several ("-": none, e.g. killed)."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    top = f"{max(known):.0f} {unit}"
    return top if len(values) == 1 else f"{top} ({', '.join('-' if v is None else f'{v:.0f}' for v in values)})"


def cap_kept(f: Figures) -> str:
    if f.max_in_flight is None or f.cap is None:
        return "-" if f.max_in_flight is None else f"({f.max_in_flight} / no cap)"
    return f"{'yes' if f.max_in_flight <= f.cap else 'NO'} ({f.max_in_flight} / {f.cap})"


def takeover_cell(f: Figures) -> str:
    if f.takeover is None:
        return "-"
    return "not all delivered" if f.takeover.seconds is None else f"{f.takeover.seconds:.1f} s"


def mean(values: list[int]) -> float:
    return statistics.mean(values) if values else float("nan")


@dataclass(frozen=True)
class Number:
    """A numeric column: each run's value, shown as the lowest-highest of the runs."""

    title: str
    value: Callable[[Figures], float | None]
    digits: int = 0
    unit: str = ""
    scale: float = 1.0

    def cell(self, runs: list[Figures]) -> str:
        values = [v * self.scale for f in runs if (v := self.value(f)) is not None and v == v]
        if not values:
            return "-"
        low, high = (f"{v:.{self.digits}f}" for v in (min(values), max(values)))
        return (low if low == high else f"{low}-{high}") + (f" {self.unit}" if self.unit else "")


@dataclass(frozen=True)
class Text:
    """Any other column: each run's text, the distinct ones joined."""

    title: str
    text: Callable[[Figures], str]

    def cell(self, runs: list[Figures]) -> str:
        return " / ".join(dict.fromkeys(self.text(f) for f in runs))


COLUMNS: list[Number | Text] = [
    Number("overhead median", lambda f: f.overhead_median, unit="ms", scale=1000),
    Number("overhead p95", lambda f: pct(f.overheads, 0.95), unit="ms", scale=1000),
    Number("polls/job", lambda f: f.polls_per_job, digits=2),
    Number("peak polls/s", lambda f: f.peak_polls_per_s),
    Number("peak API requests/s", lambda f: f.peak_requests_per_s),
    Number("submits/job", lambda f: mean(f.submits), digits=2),
    Number(
        "first response median",
        lambda f: statistics.median(f.first_responses) if f.first_responses else None,
        unit="ms",
        scale=1000,
    ),
    Number("first response p99", lambda f: pct(f.first_responses, 0.99), unit="ms", scale=1000),
    Text("loop lag p99 (each process)", lambda f: each(f.loop_lags_p99_ms, "ms")),
    Text("peak RSS (each process)", lambda f: each(f.peak_rss_mb, "MB")),
    Text("cap never exceeded (max in flight / cap)", cap_kept),
    Text("takeover", takeover_cell),
    Number("failed", lambda f: f.failed),
]


def groups(rows: list[Figures]) -> list[list[Figures]]:
    """The runs of each row (same distribution, jobs and client), bot rows first at each size."""
    keyed: dict[tuple[str, int, str], list[Figures]] = {}
    for f in rows:
        keyed.setdefault((f.distribution, f.jobs, f.client), []).append(f)
    return sorted(keyed.values(), key=lambda g: (g[0].distribution, g[0].jobs, not g[0].is_bot))


def table(rows: list[Figures]) -> str:
    head = "| jobs | client | " + " | ".join(column.title for column in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for group in groups(rows):
        cells = [column.cell(group) for column in COLUMNS]
        lines.append(f"| {group[0].jobs} | {group[0].client} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference(rows: list[Figures], bot: Figures) -> Figures | None:
    """The SDK's row of the same run, distribution and size."""
    return next(
        (
            r
            for r in rows
            if not r.is_bot and (r.run, r.distribution, r.jobs) == (bot.run, bot.distribution, bot.jobs) and r.overheads
        ),
        None,
    )


def ratios(rows: list[Figures]) -> str:
    """Per bot row: overhead median and polls per job over the SDK's, each run's, lowest-highest."""
    out = []
    for group in groups([r for r in rows if r.is_bot]):
        pairs = [(f, ref) for f in group if (ref := reference(rows, f)) is not None and f.overheads]
        if not pairs:
            continue
        overhead = [f.overhead_median / ref.overhead_median for f, ref in pairs]
        polls = [f.polls_per_job / ref.polls_per_job for f, ref in pairs]
        f = group[0]
        line = (
            f"{f.distribution}, {f.jobs} jobs, {f.client}: overhead median / SDK = {span(overhead)}, "
            f"polls per job / SDK = {span(polls)}"
        )
        if f.client.startswith("bot (poll") and f.distribution in OVERHEAD_TARGET:
            target = OVERHEAD_TARGET[f.distribution]
            met = all(o <= target for o in overhead) and all(p <= 1.0 for p in polls)
            line += f" (target <= {target:g} at <= 1.0: {'met' if met else 'NOT met'})"
        out.append(line)
    return "\n".join(out)


def span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def targets(f: Figures) -> str:
    """The issue's targets for one bot row: first response p99 < 1 s, the cap kept, takeover within
    15 s, peak RSS under 120 MB per process."""
    p99 = pct(f.first_responses, 0.99)
    rss = [v for v in f.peak_rss_mb if v is not None]
    checks = [
        f"first response p99 < 1 s: {'yes' if p99 < 1 else 'NO'} ({ms(p99)})",
        f"cap never exceeded: {cap_kept(f)}",
        f"RSS < 120 MB: {'yes' if rss and max(rss) < 120 else 'NO'} ({each(f.peak_rss_mb, 'MB')})",
    ]
    if f.takeover is not None:
        seconds = f.takeover.seconds
        checks.append(f"takeover <= 15 s: {'yes' if seconds is not None and seconds <= 15 else 'NO'}")
    return f"run {f.run}, {f.distribution}, {f.jobs} jobs, {f.client}: " + "; ".join(checks)


def machine(rows: list[Figures]) -> str:
    return "\n".join(f"run {f.run}, {f.distribution}, {f.jobs} jobs, {f.client}: {f.load.summary}" for f in rows)
