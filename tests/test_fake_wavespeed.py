"""The fake WaveSpeed follows the API page, so tests built on it test the real protocol."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fakes.images import image_size_of
from tests.fakes.wavespeed import TEXT_TO_IMAGE, FakeWaveSpeed, Scenario


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def auth(fake: FakeWaveSpeed) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.api_key}"}


async def test_status_moves_from_created_to_completed(http, wavespeed: FakeWaveSpeed):
    wavespeed.scenario = Scenario(queue_seconds=0.2, inference_seconds=0.2, image_size=(40, 30))
    url = f"{wavespeed.base_url}/api/v3/{TEXT_TO_IMAGE}"
    async with http.post(url, json={"prompt": "p", "num_images": 2}, headers=auth(wavespeed)) as response:
        submitted = await response.json()
    assert submitted["code"] == 200 and submitted["data"]["status"] == "created"
    assert submitted["data"]["outputs"] == [] and "timings" not in submitted["data"]
    prediction = wavespeed.predictions[submitted["data"]["id"]]

    await asyncio.sleep(max(0.0, prediction.completed_at - asyncio.get_running_loop().time()) + 0.05)
    async with http.get(submitted["data"]["urls"]["get"], headers=auth(wavespeed)) as response:
        data = (await response.json())["data"]
    assert data["status"] == "completed" and len(data["outputs"]) == 2
    assert data["has_nsfw_contents"] == [False, False] and data["timings"]["inference"] == 200
    async with http.get(data["outputs"][1]) as response:  # a CDN: no auth
        assert response.content_type == "image/png"
        assert image_size_of(await response.read()) == (40, 30)


@pytest.mark.parametrize(
    ("body", "headers_ok", "status"),
    [
        ({"prompt": "p"}, False, 401),
        ({"prompt": ""}, True, 400),
        ({"prompt": "p", "num_images": 5}, True, 400),
        ({"prompt": "p", "safety_tolerance": 2}, True, 400),
        ({"prompt": "p", "seed": 10_000_000_000}, True, 400),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_created(http, wavespeed, body, headers_ok, status):
    headers = auth(wavespeed) if headers_ok else {"Authorization": "Bearer wrong"}
    async with http.post(f"{wavespeed.base_url}/api/v3/{TEXT_TO_IMAGE}", json=body, headers=headers) as response:
        assert response.status == status
        assert (await response.json())["code"] == status
    assert not wavespeed.predictions and not wavespeed.accepted_submits()


async def test_failed_prediction_is_http_200_with_status_failed(http, wavespeed):
    wavespeed.scenario = Scenario(queue_seconds=0, inference_seconds=0, final_status="failed", error="nope")
    async with http.post(f"{wavespeed.base_url}/api/v3/{TEXT_TO_IMAGE}", json={"prompt": "p"}, headers=auth(wavespeed)):
        pass
    [prediction_id] = wavespeed.predictions
    url = f"{wavespeed.base_url}/api/v3/predictions/{prediction_id}/result"
    async with http.get(url, headers=auth(wavespeed)) as response:
        body = await response.json()
    assert response.status == 200 and body["code"] == 200
    assert body["data"]["status"] == "failed" and body["data"]["error"] == "nope" and body["data"]["code"] == 1200


async def test_scripted_answers_are_consumed_in_order(http, wavespeed):
    wavespeed.scenario = Scenario(submit_responses=[429, "html"], retry_after=2.5)
    url = f"{wavespeed.base_url}/api/v3/{TEXT_TO_IMAGE}"
    statuses, retry_after = [], None
    for _ in range(3):
        async with http.post(url, json={"prompt": "p"}, headers=auth(wavespeed)) as response:
            statuses.append(response.status)
            retry_after = retry_after or response.headers.get("Retry-After")
    assert statuses == [429, 502, 200] and retry_after == "2.5"
    assert len(wavespeed.submits()) == 3 and len(wavespeed.accepted_submits()) == 1
    async with http.get(f"{wavespeed.base_url}/api/v3/predictions/unknown/result", headers=auth(wavespeed)) as r:
        assert r.status == 404


async def test_max_in_flight_counts_overlapping_predictions(http, wavespeed):
    wavespeed.scenario = Scenario(queue_seconds=0, inference_seconds=5)
    url = f"{wavespeed.base_url}/api/v3/{TEXT_TO_IMAGE}"
    for _ in range(3):
        async with http.post(url, json={"prompt": "p"}, headers=auth(wavespeed)):
            pass
    assert wavespeed.max_in_flight() == 3


def test_inference_times_follow_the_scenario_s_distribution():
    fake = FakeWaveSpeed()
    # The benchmark's peaked times: median 5 s, sigma 0.2105, so 90 % fall within 3.5-7 s (4.5 %
    # below, 5.5 % above: ln(3.5/5) / 0.2105 = -1.695 and ln(7/5) / 0.2105 = 1.599 standard deviations).
    peaked = sorted(fake.draw_inference(Scenario(inference_lognormal=(5.0, 0.2105))) for _ in range(4000))
    assert 4.9 < peaked[2000] < 5.1
    assert 0.88 < sum(3.5 <= t <= 7.0 for t in peaked) / 4000 < 0.92
    even = [fake.draw_inference(Scenario(inference_range=(2.0, 8.0))) for _ in range(4000)]
    assert min(even) >= 2.0 and max(even) <= 8.0 and 0.23 < sum(t < 3.5 for t in even) / 4000 < 0.27
    assert fake.draw_inference(Scenario(inference_seconds=0.3)) == 0.3
