"""What the container and the monitoring files rely on: the health probe, and a dashboard that only
asks for series the bot exports (and shows every one of them)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

from bot.ops.prometheus import PrometheusMetrics
from bot.refusals import Refused
from tests.botprocess import ROOT, free_port

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "imagine-bot.json"
PROBE = ["python", "-m", "bot.ops.probe"]


async def probe(port: int, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HTTP_PORT", "WEBHOOK_PORT")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.ops.probe", *args,
        env={**env, "PYTHONPATH": str(ROOT), "HTTP_PORT": str(port)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_container_probe_passes_on_a_live_bot_and_fails_on_a_dead_port(start_bot):
    bot = await start_bot()
    port = int(bot.http_url.rsplit(":", 1)[1])
    assert await probe(port) == (0, "")
    closed = free_port()
    status, out = await probe(closed)
    assert status == 1 and out.startswith(f"unhealthy: http://127.0.0.1:{closed}/healthz")
    # Docker and compose run exactly this probe.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        f"HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD {json.dumps(PROBE)}" in dockerfile
    )
    assert f"test: {json.dumps(['CMD', *PROBE])}" in (ROOT / "compose.yaml").read_text()


async def test_the_probe_loads_no_discord_library():
    code = (
        "import sys, bot.ops.probe; print(sorted(m for m in sys.modules if m.split('.')[0] in ('discord', 'aiohttp')))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert out.decode().strip() == "[]"


def exported() -> set[str]:
    """Every series name the bot's metrics export once each seam method has been called."""
    metrics = PrometheusMetrics(price_per_image=0.04)
    metrics.job_finished("failed", "server_error")
    metrics.queue_waited(1.0)
    metrics.generated(5.0)
    metrics.delivered(0.1, "placeholder")
    metrics.images(2, 1)
    metrics.queue(waiting=1, running=1)
    metrics.refused(Refused.USER_WINDOW)
    metrics.wavespeed_request("submit", 429)
    metrics.balance(10.0)
    metrics.discord_error(403, 50013)
    metrics.loop_lag(0.001)

    class Gateway:
        @property
        def latencies(self) -> list[tuple[int, float]]:
            return [(0, 0.05)]

        def is_ready(self) -> bool:
            return True

    metrics.watch(Gateway())
    families = text_string_to_metric_families(metrics.render().decode())
    return {sample.name for family in families for sample in family.samples}


def test_the_dashboard_asks_only_for_exported_series_and_shows_every_one():
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    asked = {name for expr in expressions for name in re.findall(r"\b(?:imagine|process)_[a-z_]+\b", expr)}
    names = exported()
    assert asked <= names, asked - names
    ours = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names if n.startswith("imagine_")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in asked}
    assert ours <= shown, ours - shown


def test_env_example_names_every_setting():
    from bot.config import Settings

    documented = (ROOT / ".env.example").read_text()
    assert [name.upper() for name in Settings.model_fields if name.upper() not in documented] == []
