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
# Only used when WEBHOOK_URL is set (WaveSpeed pushes finished predictions here).
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
