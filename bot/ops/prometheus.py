"""The metrics seam backed by `prometheus-client`, on a registry of its own.

Each bot has its own `CollectorRegistry`, not the library's global one, so several bots in one
process (the tests) never share or collide on a series. `render()` is what `GET /metrics` serves.
Besides the counters and histograms the seam's calls feed, two collectors are read at scrape
time: the process (resident memory, CPU, open files; Linux) and the Discord gateway (each shard's
heartbeat latency and whether it is connected).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.metrics import Endpoint, Metrics, Outcome, Route
from bot.refusals import Refused, category

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: the placeholder's first answer is instant, a generation takes 5-30 s, a long queue minutes.
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
GENERATION_BUCKETS = (1, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Gateway(Protocol):
    """What the gateway collector reads from the discord.py client."""

    @property
    def latencies(self) -> list[tuple[int, float]]: ...

    def is_ready(self) -> bool: ...


class _GatewayCollector(Collector):
    def __init__(self) -> None:
        self.client: Gateway | None = None

    def collect(self) -> Iterable[Metric]:
        latency = GaugeMetricFamily(
            "imagine_discord_gateway_latency_seconds",
            "Time between a gateway heartbeat and its acknowledgement, per shard",
            labels=["shard"],
        )
        connected = GaugeMetricFamily(
            "imagine_discord_connected", "1 when the bot is connected to Discord's gateway and ready, else 0"
        )
        ready = self.client is not None and self.client.is_ready()
        connected.add_metric([], 1.0 if ready else 0.0)
        if self.client is not None:
            for shard, seconds in self.client.latencies:
                if math.isfinite(seconds):  # infinite until the first heartbeat is acknowledged
                    latency.add_metric([str(shard)], seconds)
        return [latency, connected]


class PrometheusMetrics(Metrics):
    def __init__(self, *, price_per_image: float, process: bool = True) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call] # no `_created` series beside every counter: noise on a dashboard
        self.registry = CollectorRegistry(auto_describe=True)
        self._price = price_per_image
        r = self.registry
        self._jobs = Counter(
            "imagine_jobs_finished",
            "Jobs that ended, by outcome (and reason, for failures)",
            ["outcome", "reason"],
            registry=r,
        )
        self._waiting = Gauge(
            "imagine_jobs_waiting", "Jobs in the shared line (every process's), read from the database", registry=r
        )
        self._running = Gauge(
            "imagine_jobs_running", "Jobs on WaveSpeed now (every process's), read from the database", registry=r
        )
        self._queue_wait = Histogram(
            "imagine_queue_wait_seconds",
            "From the command to WaveSpeed accepting the submit",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self._generation = Histogram(
            "imagine_generation_seconds",
            "From the submit to WaveSpeed's final answer",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self._delivery = Histogram(
            "imagine_delivery_seconds",
            "From WaveSpeed's final answer to the images reaching Discord",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self._routes = Counter("imagine_deliveries", "Results delivered, by where they went", ["route"], registry=r)
        self._images = Counter("imagine_images_generated", "Images WaveSpeed made (and billed)", registry=r)
        self._flagged = Counter("imagine_images_flagged", "Images WaveSpeed flagged as possibly NSFW", registry=r)
        self._spend = Counter(
            "imagine_estimated_spend_dollars", "Images made times PRICE_PER_IMAGE, in US dollars", registry=r
        )
        self._refusals = Counter(
            "imagine_refusals", "Requests refused before anything was sent, by rule", ["kind", "reason"], registry=r
        )
        self._wavespeed = Counter(
            "imagine_wavespeed_requests",
            "HTTP requests to WaveSpeed, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self._limited = Counter(
            "imagine_wavespeed_rate_limited",
            "WaveSpeed answers 429 (too many requests), by endpoint",
            ["endpoint"],
            registry=r,
        )
        self._balance = Gauge(
            "imagine_wavespeed_balance_dollars", "The WaveSpeed account's balance, as last read", registry=r
        )
        self._discord = Counter(
            "imagine_discord_api_errors",
            "Discord REST answers with an error status, by status and error code",
            ["status", "code"],
            registry=r,
        )
        self._lag = Histogram(
            "imagine_event_loop_lag_seconds",
            "How late the event loop wakes a sleeping task",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._gateway = _GatewayCollector()
        r.register(self._gateway)
        if process:
            ProcessCollector(registry=r)  # process_resident_memory_bytes and friends (Linux)
        for outcome in ("delivered", "timeout", "unconfirmed", "cancelled"):
            self._jobs.labels(outcome, "")  # present at 0 from the start: rate() needs a first sample

    def watch(self, client: Gateway) -> None:
        """Read this client's gateway at every scrape."""
        self._gateway.client = client

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- the seam ---------------------------------------------------------------------------------
    def job_finished(self, outcome: Outcome, reason: str = "") -> None:
        self._jobs.labels(outcome, reason).inc()

    def queue_waited(self, seconds: float) -> None:
        self._queue_wait.observe(max(0.0, seconds))

    def generated(self, seconds: float) -> None:
        self._generation.observe(max(0.0, seconds))

    def delivered(self, seconds: float, route: Route) -> None:
        self._delivery.observe(max(0.0, seconds))
        self._routes.labels(route).inc()

    def images(self, generated: int, flagged: int) -> None:
        self._images.inc(generated)
        self._flagged.inc(flagged)
        self._spend.inc(generated * self._price)

    def queue(self, *, waiting: int, running: int) -> None:
        self._waiting.set(waiting)
        self._running.set(running)

    def refused(self, reason: Refused) -> None:
        self._refusals.labels(category(reason), reason.name.lower()).inc()

    def wavespeed_request(self, endpoint: Endpoint, status: int | str) -> None:
        self._wavespeed.labels(endpoint, str(status)).inc()
        if status == 429:
            self._limited.labels(endpoint).inc()

    def balance(self, dollars: float) -> None:
        self._balance.set(dollars)

    def discord_error(self, status: int, code: int) -> None:
        self._discord.labels(str(status), str(code)).inc()

    def loop_lag(self, seconds: float) -> None:
        self._lag.observe(seconds)
