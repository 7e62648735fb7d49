# Slim image, non-root user; `docker stop` sends SIGTERM, which the bot handles as a clean shutdown.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install . && useradd --create-home --uid 10001 bot && mkdir -p /app/data && chown bot /app/data && chmod 700 /app/data

USER bot
# The database lives here: mount a volume to keep it across container restarts.
VOLUME ["/app/data"]
# The bot's HTTP server (HTTP_PORT): /metrics, /healthz, /readyz, and /wavespeed/webhook when push
# is on. Only the webhook is meant for the internet (see the README's Operations section).
EXPOSE 8080
# Alive = the process answers /healthz (it does while start-up waits for a service, so a bot that is
# retrying is not restarted). The probe is the standard library only: no curl in the slim image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "bot.ops.probe"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
