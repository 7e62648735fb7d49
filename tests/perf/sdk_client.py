"""The benchmark's reference: the official `wavespeed` SDK's `run()` (submit, then a poll every 1 s,
its default) for each of `--jobs` prompts, each in a thread of its own, as a program using the SDK
for concurrent jobs would. It runs in a process of its own, like the bot: sharing the harness's
process would make its 1000 threads and the fake WaveSpeed fight over one interpreter lock, and the
SDK's figures would measure that fight. Prints one JSON object: when each prompt's `run()` returned
(time.monotonic(), the same clock across processes on Linux), how many failed, and the CPU seconds
this process used.

    python -m tests.perf.sdk_client --base-url http://127.0.0.1:PORT --api-key KEY --jobs 100
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from tests.fakes.wavespeed import TEXT_TO_IMAGE

PROMPT = "sdk job"


def main() -> None:
    import wavespeed as sdk  # type: ignore[import-untyped,import-not-found,unused-ignore]  # the official SDK: pip install -e ".[bench]"

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    args = parser.parse_args()
    client = sdk.Client(api_key=args.api_key, base_url=args.base_url)
    returned: dict[str, float] = {}

    def one(i: int) -> bool:
        prompt = f"{PROMPT} {i}"
        try:
            client.run(TEXT_TO_IMAGE, {"prompt": prompt}, poll_interval=1.0)  # the SDK's default
        except Exception:
            return False
        returned[prompt] = time.monotonic()
        return True

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, range(args.jobs)))
    times = os.times()
    print(json.dumps({"returned": returned, "failed": results.count(False), "cpu": times.user + times.system}))


if __name__ == "__main__":
    main()
