"""One exception tree for everything that can go wrong talking to WaveSpeed.

No exception here carries a header, a URL with credentials or the API key: the messages are safe to
log. `reason` names the failure for the member (the presenter turns it into words in the member's
language, `bot.i18n`); `retryable` says whether trying the same request again later can help.
"""

from __future__ import annotations


class WaveSpeedError(Exception):
    """Base of every WaveSpeed failure."""

    reason = "wavespeed"
    retryable = True
    # True only when WaveSpeed clearly refused a request, so a submit that raised it created no
    # task and bills nothing. Anything else raised by a submit may have created one.
    nothing_created = False

    def __init__(self, message: str, *, prediction_id: str | None = None) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id


class AuthenticationError(WaveSpeedError):
    """401 or 403: the key is wrong, not activated, or the account is suspended."""

    reason = "auth"
    retryable = False
    nothing_created = True


class RateLimitedError(WaveSpeedError):
    """429: the account's rate or concurrency limit."""

    reason = "rate_limited"
    nothing_created = True

    def __init__(self, message: str, *, retry_after: float | None, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.retry_after = retry_after


class ServerError(WaveSpeedError):
    """A 5xx, or a 200 envelope whose `code` says the server failed."""

    reason = "server"

    def __init__(self, message: str, *, status: int, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.status = status


class InvalidRequestError(WaveSpeedError):
    """A 4xx other than auth and rate limits: the API refused the input. `enveloped` says the
    answer was WaveSpeed's own JSON envelope with its error code (a clear refusal); a bare 4xx
    (from a proxy, say) proves nothing about whether a task was created."""

    reason = "invalid"
    retryable = False

    def __init__(self, message: str, *, enveloped: bool = True, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.nothing_created = enveloped


class ConnectionFailedError(WaveSpeedError):
    """The connection could not be made or broke. `sent` says whether the request may have arrived."""

    reason = "connection"

    def __init__(self, message: str, *, sent: bool, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.sent = sent
        self.nothing_created = not sent


class RequestTimeoutError(ConnectionFailedError):
    """No answer in time. The request was sent, so the API may have acted on it."""

    reason = "timeout"


class MalformedResponseError(WaveSpeedError):
    """The body was not the documented JSON envelope."""

    reason = "malformed"


class PredictionFailedError(WaveSpeedError):
    """The prediction ended in `failed` (or `cancelled`, `timeout`, `deleted`)."""

    def __init__(self, message: str, *, prediction_id: str, status: str, code: int | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.status = status
        self.code = code
        # Task codes 1xxx blame the input (1200 is content moderation); 5xxx are worth another try.
        self.retryable = code is None or not 1000 <= code < 2000

    @property
    def reason(self) -> str:  # type: ignore[override]
        if self.code == 1200:
            return "moderated"
        if self.code == 1402:
            return "source_unreachable"
        return "prediction_failed"


class JobTimeoutError(WaveSpeedError):
    """The prediction did not finish before the job's deadline."""

    reason = "job_timeout"


class OutputError(WaveSpeedError):
    """A finished prediction whose outputs can't be used: none, too large, or not an image."""

    reason = "output"
