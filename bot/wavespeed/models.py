"""Typed models of the WaveSpeed v3 envelope and prediction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

from bot.wavespeed.errors import OutputError

PENDING_STATUSES = frozenset({"created", "processing"})
SUCCESS_STATUS = "completed"
# The documented final failure, plus the ones the official SDK also treats as final.
FAILED_STATUSES = frozenset({"failed", "cancelled", "timeout", "deleted"})


class Timings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inference: int | None = Field(default=None, description="milliseconds")


class Prediction(BaseModel):
    """`data` of a submit or result answer. Fields come and go by status, so most are optional."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    status: str
    model: str | None = None
    outputs: list[str] | None = None
    has_nsfw_contents: list[bool | None] | None = None
    error: str | None = None
    code: int | None = None
    timings: Timings | None = None
    created_at: datetime | None = None

    @field_validator("model", "has_nsfw_contents", "error", "code", "timings", "created_at", mode="wrap")
    @classmethod
    def _optional_is_lenient(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """An unreadable optional field becomes None rather than failing a finished job. For
        `has_nsfw_contents` None means "unknown", which counts as flagged."""
        try:
            return handler(value)
        except ValidationError:
            return None

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status == SUCCESS_STATUS

    @property
    def is_final(self) -> bool:
        return self.is_completed or self.is_failed

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def output_urls(self) -> list[str]:
        return list(self.outputs or [])

    @property
    def inference_ms(self) -> int | None:
        return self.timings.inference if self.timings else None

    def usable(self, limit: int) -> Prediction:
        """The prediction with at most `limit` outputs (what was asked for, and paid for) and only
        http(s) links; each kept output keeps its own NSFW flag. Raises OutputError if none is left."""
        flags = self.nsfw_flags()
        kept = [(url, flags[i]) for i, url in enumerate(self.output_urls[: max(0, limit)]) if _is_web_link(url)]
        if not kept and self.output_urls:
            raise OutputError("the prediction's outputs are not usable links", prediction_id=self.id)
        if len(kept) == len(self.output_urls) and self.has_nsfw_contents == flags:
            return self
        return self.model_copy(update={"outputs": [u for u, _ in kept], "has_nsfw_contents": [f for _, f in kept]})

    def nsfw_flags(self) -> list[bool]:
        """One flag per output. A flag that is missing, null or beyond a short list counts as flagged:
        the safe default for moderated servers."""
        flags = list(self.has_nsfw_contents or [])
        return [
            bool(flags[i]) if i < len(flags) and flags[i] is not None else True for i in range(len(self.output_urls))
        ]


def _is_web_link(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


class Envelope(BaseModel):
    """`{code, message, data}` around every API answer."""

    model_config = ConfigDict(extra="ignore")

    code: int
    message: str = ""
    data: Any = None
