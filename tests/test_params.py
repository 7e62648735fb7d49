"""Validation of the /imagine options (pure)."""

import random

import pytest

from bot.params import SEED_MAX, InvalidOptionError, validate
from bot.render import option_error_text


def test_defaults_fill_in_and_random_seed_is_concrete():
    params = validate(prompt="  a lighthouse at dusk  ", rng=random.Random(7))
    assert params.prompt == "a lighthouse at dusk"
    assert (params.aspect_ratio, params.num_images, params.guidance_scale, params.safety_tolerance) == (
        "1:1",
        1,
        3.5,
        "2",
    )
    assert params.seed_was_random and 0 <= params.seed <= SEED_MAX
    assert params.api_input()["seed"] == params.seed


def test_seed_minus_one_means_random_and_given_seed_is_kept():
    assert validate(prompt="x", seed=-1, rng=random.Random(1)).seed_was_random
    params = validate(prompt="x", seed=42)
    assert params.seed == 42 and not params.seed_was_random


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "x", "num_images": 9}, "num_images"),
        ({"prompt": "x", "num_images": 0}, "num_images"),
        ({"prompt": "x", "num_images": True}, "num_images"),
        ({"prompt": "x", "num_images": 2.0}, "num_images"),
        ({"prompt": "x", "seed": -2}, "seed"),
        ({"prompt": "x", "seed": SEED_MAX + 1}, "seed"),
        ({"prompt": "x", "guidance_scale": 0.5}, "guidance_scale"),
        ({"prompt": "x", "guidance_scale": 10.01}, "guidance_scale"),
        ({"prompt": "x", "guidance_scale": float("nan")}, "guidance_scale"),
        ({"prompt": "x", "aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"prompt": "x", "safety_tolerance": "6"}, "safety_tolerance"),
        ({"prompt": "x", "safety_tolerance": "0"}, "safety_tolerance"),
    ],
)
def test_out_of_range_options_name_the_option(options, option):
    with pytest.raises(InvalidOptionError) as raised:
        validate(**options)
    assert raised.value.option == option
    assert f"`{option}`" in option_error_text(raised.value)  # what the member reads names it


def test_edges_are_accepted():
    params = validate(
        prompt="x" * 2000, num_images=4, seed=SEED_MAX, guidance_scale=10, safety_tolerance=5, aspect_ratio="9:21"
    )
    assert (params.num_images, params.seed, params.guidance_scale, params.safety_tolerance) == (4, SEED_MAX, 10.0, "5")
