"""`python -m bot.ops.probe`: Docker's HEALTHCHECK, without curl in the slim image.

GET http://127.0.0.1:<port>/healthz (the port from HTTP_PORT, else WEBHOOK_PORT, else 8080; a path
may be given, e.g. /readyz); exit status 0 on HTTP 200, 1 otherwise. Only the standard library is
imported (no discord.py), so a probe every 30 s costs a few milliseconds of CPU.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def probe(path: str = "/healthz", *, port: str | None = None) -> int:
    port = port or os.environ.get("HTTP_PORT") or os.environ.get("WEBHOOK_PORT") or "8080"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(probe(*sys.argv[1:2]))
