"""Running the bot as a service: metrics, health and readiness, `python -m bot check`, start-up
checks with retries, and the low-balance watch."""
