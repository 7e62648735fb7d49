"""The `/imagine` options, validated on our side: Discord does not enforce ranges on raw payloads."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
SAFETY_TOLERANCES = ("1", "2", "3", "4", "5")
PROMPT_MAX_LENGTH = 2000
NUM_IMAGES_MAX = 4
GUIDANCE_MIN, GUIDANCE_MAX = 1.0, 10.0
# Every WaveSpeed Kontext page accepts -1..2147483647; one page allows more, so stay within the common range.
SEED_MAX = 2_147_483_647

DEFAULT_ASPECT_RATIO = "1:1"
DEFAULT_NUM_IMAGES = 1
DEFAULT_GUIDANCE = 3.5
DEFAULT_SAFETY_TOLERANCE = "2"


class InvalidOptionError(ValueError):
    """An option the member sent is missing or out of range: which option, which rule (`problem`,
    a catalogue entry `option.<problem>`) and the figures it needs. The words are the presenter's."""

    def __init__(self, option: str, problem: str, **values: object) -> None:
        super().__init__(f"{option}: {problem} {values}")
        self.option = option
        self.problem = problem
        self.values = values


@dataclass(frozen=True)
class ImagineParams:
    prompt: str
    aspect_ratio: str = DEFAULT_ASPECT_RATIO
    num_images: int = DEFAULT_NUM_IMAGES
    seed: int = 0
    guidance_scale: float = DEFAULT_GUIDANCE
    safety_tolerance: str = DEFAULT_SAFETY_TOLERANCE
    seed_was_random: bool = True
    image_url: str | None = None  # set for a Kontext edit of this image (one output)

    @property
    def is_edit(self) -> bool:
        return self.image_url is not None

    def api_input(self) -> dict[str, Any]:
        """The request body, with the concrete seed we will show: the edit endpoint takes the source
        image and makes one image; text-to-image takes `num_images`."""
        if self.image_url is not None:
            return {
                "prompt": self.prompt,
                "image": self.image_url,
                "aspect_ratio": self.aspect_ratio,
                "seed": self.seed,
                "guidance_scale": self.guidance_scale,
                "safety_tolerance": self.safety_tolerance,
            }
        return {
            "prompt": self.prompt,
            "aspect_ratio": self.aspect_ratio,
            "num_images": self.num_images,
            "seed": self.seed,
            "guidance_scale": self.guidance_scale,
            "safety_tolerance": self.safety_tolerance,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(
    *,
    prompt: object,
    aspect_ratio: object = None,
    num_images: object = None,
    seed: object = None,
    guidance_scale: object = None,
    safety_tolerance: object = None,
    image_url: str | None = None,
    rng: random.Random | None = None,
) -> ImagineParams:
    """Check every option and fill the defaults. Raises InvalidOptionError naming the first bad option."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidOptionError("prompt", "required")
    prompt = prompt.strip()
    if len(prompt) > PROMPT_MAX_LENGTH:
        raise InvalidOptionError("prompt", "too_long", length=len(prompt), limit=PROMPT_MAX_LENGTH)

    aspect_ratio = DEFAULT_ASPECT_RATIO if aspect_ratio is None else aspect_ratio
    if aspect_ratio not in ASPECT_RATIOS:
        raise InvalidOptionError("aspect_ratio", "one_of", choices=", ".join(ASPECT_RATIOS))

    num_images = DEFAULT_NUM_IMAGES if num_images is None or image_url is not None else num_images
    if not _is_int(num_images) or not 1 <= num_images <= NUM_IMAGES_MAX:  # type: ignore[operator]
        raise InvalidOptionError("num_images", "whole_number", low=1, high=NUM_IMAGES_MAX)

    seed_was_random = seed is None or seed == -1
    if seed_was_random:
        seed = (rng or random.SystemRandom()).randint(0, SEED_MAX)
    elif not _is_int(seed) or not 0 <= seed <= SEED_MAX:  # type: ignore[operator]
        raise InvalidOptionError("seed", "seed", high=str(SEED_MAX))

    guidance_scale = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale
    if (
        not isinstance(guidance_scale, int | float)
        or isinstance(guidance_scale, bool)
        or not math.isfinite(guidance_scale)
        or not GUIDANCE_MIN <= guidance_scale <= GUIDANCE_MAX
    ):
        raise InvalidOptionError("guidance_scale", "number", low=GUIDANCE_MIN, high=GUIDANCE_MAX)

    safety_tolerance = DEFAULT_SAFETY_TOLERANCE if safety_tolerance is None else str(safety_tolerance)
    if safety_tolerance not in SAFETY_TOLERANCES:
        raise InvalidOptionError("safety_tolerance", "tolerance")

    return ImagineParams(
        prompt=prompt,
        aspect_ratio=str(aspect_ratio),
        num_images=int(num_images),  # type: ignore[call-overload]
        seed=int(seed),  # type: ignore[call-overload]
        guidance_scale=float(guidance_scale),
        safety_tolerance=safety_tolerance,
        seed_was_random=seed_was_random,
        image_url=image_url,
    )
