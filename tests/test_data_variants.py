"""The harder variants of the embedded data: deterministic, as documented, and harder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikelottery.data import VARIANTS, DigitsDataset, DigitsDVSDataset, get_dataset
from spikelottery.data.corrupt import (
    add_noise,
    corruption_generator,
    event_noise,
    fewer_samples,
    lower_contrast,
    occlude,
)
from spikelottery.engine import TrainConfig


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_are_deterministic_and_differ_from_the_plain_data(name: str) -> None:
    base, _ = VARIANTS[name]
    a = get_dataset(name, split="test")
    b = get_dataset(name, split="test")
    plain = get_dataset(base, split="test")
    data = (lambda ds: ds.frames) if base == "digits_dvs" else (lambda ds: ds.images)
    assert torch.equal(data(a), data(b))  # the same images on every run
    assert torch.equal(a.labels, plain.labels)  # the test split is never reduced
    if name == "digits_few":  # fewer training samples, the same test images
        assert torch.equal(data(a), data(plain))
        assert len(get_dataset(name, split="train")) < len(get_dataset(base, split="train"))
    else:
        assert not torch.equal(data(a), data(plain))
    assert TrainConfig(dataset=name, out=None).dataset == name


def test_variant_draws_ignore_the_torch_seed() -> None:
    torch.manual_seed(1)
    a = DigitsDataset("train", noise=0.3, occlusion=0.25).images
    torch.manual_seed(2)
    b = DigitsDataset("train", noise=0.3, occlusion=0.25).images
    assert torch.equal(a, b)
    assert not torch.equal(a, DigitsDataset("test", noise=0.3, occlusion=0.25).images[:1])


def test_noise_matches_its_sigma() -> None:
    images = torch.full((200, 1, 8, 8), 0.5)
    out = add_noise(images, 0.1, torch.Generator().manual_seed(0))
    assert out.std().item() == pytest.approx(0.1, rel=0.05)
    assert out.mean().item() == pytest.approx(0.5, abs=0.005)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 10_000))
def test_occlusion_zeros_one_square_per_image(size: int, seed: int) -> None:
    images = torch.ones(5, 3, 8, 8)
    out = occlude(images, size, torch.Generator().manual_seed(seed))
    zeros = (out == 0).all(dim=1)  # every channel of a pixel together
    assert (zeros.flatten(1).sum(1) == size * size).all()
    for mask in zeros:  # a square: its rows and columns are contiguous runs of `size`
        rows = torch.nonzero(mask.any(1)).flatten()
        cols = torch.nonzero(mask.any(0)).flatten()
        assert len(rows) == size and len(cols) == size
        assert rows[-1] - rows[0] == size - 1 and cols[-1] - cols[0] == size - 1


def test_contrast_and_fewer_samples() -> None:
    assert lower_contrast(torch.tensor([0.0, 0.5, 1.0]), 0.5).tolist() == [0.25, 0.5, 0.75]
    labels = np.repeat(np.arange(10), [30 + 3 * c for c in range(10)])
    idx = fewer_samples(labels, 0.2, seed=3)
    counts = np.bincount(labels[idx], minlength=10)
    expected = [max(1, round(0.2 * (30 + 3 * c))) for c in range(10)]
    assert counts.tolist() == expected and len(set(idx)) == len(idx)
    few = DigitsDataset("train", train_fraction=0.1)
    assert len(few) == 143 and len(DigitsDataset("test", train_fraction=0.1)) == 359


def test_event_noise_adds_poisson_counts() -> None:
    frames = torch.zeros(50, 4, 2, 16, 16)
    out = event_noise(frames, 0.5, corruption_generator("events", "train"))
    assert out.mean().item() == pytest.approx(0.5, rel=0.03)
    assert out.var().item() == pytest.approx(0.5, rel=0.05)  # Poisson: variance = mean
    noisy = DigitsDVSDataset("test", noise_rate=1.0)
    plain = DigitsDVSDataset("test")
    extra = (noisy.frames - plain.frames).mean().item()
    assert extra == pytest.approx(1.0, rel=0.05) and (noisy.frames >= plain.frames).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"contrast": 0.0}, "contrast"),
        ({"contrast": 1.5}, "contrast"),
        ({"occlusion": 2.0}, "occlusion"),
        ({"train_fraction": 0.0}, "train_fraction"),
        ({"train_fraction": True}, "train_fraction"),
    ],
)
def test_bad_variant_arguments_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DigitsDataset("train", **kwargs)


def test_bad_event_noise_rate() -> None:
    with pytest.raises(ValueError, match="noise_rate"):
        DigitsDVSDataset("test", noise_rate=-1)
