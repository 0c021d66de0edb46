"""The model zoo: parameter counts, input layouts, twins, reset, sparsify and patch pruning."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from spikingjelly.activation_based import functional
from torch import nn

from _engine_testing import tiny
from _model_state import assert_unchanged, snapshot
from spikelottery import sparsify
from spikelottery.engine import ConfigError, Trainer
from spikelottery.functional import kept_count
from spikelottery.models import (
    VGG,
    ConvPEP,
    Spikformer,
    SpikingResNet,
    SpikingSelfAttention,
    create_model,
    default_patch_size,
    encode_input,
    list_models,
    min_img_size,
)
from spikelottery.neuron import LIFNeuron, lif_multistep

EAGER = {"backend": "eager"}  # no torch.compile warm-up in these tests
SMALL_MODELS = ["vgg_tiny", "vgg_small", "resnet_tiny", "spikformer_micro", "spikformer_mini"]
PAPER_MODELS = ["vgg9", "resnet19", "spikformer_tiny", "spikformer_small"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tensors here are tiny: a second OpenMP thread only spin-waits (and on a shared
    # 2-core machine made this file 3-5x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, **kwargs) -> nn.Module:
    kwargs.setdefault("neuron_kwargs", EAGER)
    return create_model(name, **kwargs)


@functools.cache
def paper_model(name: str, spiking: bool = True) -> nn.Module:
    """One shared (evaluation-mode) instance per paper model: they are large to build."""
    return make(name, spiking=spiking).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + 2 * cout  # conv without bias + BN weight and bias


# ----------------------------------------------------------------------------- registry


def test_list_models_has_the_paper_models_and_small_variants() -> None:
    names = list_models()
    assert names == sorted(names)
    for name in [*PAPER_MODELS, *SMALL_MODELS]:
        assert name in names


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model name 'vgg11'") as info:
        create_model("vgg11")
    for name in list_models():
        assert name in str(info.value)


def test_kwargs_override_the_preset() -> None:
    model = make("spikformer_micro", depth=1)
    assert isinstance(model, Spikformer) and len(model.blocks) == 1
    assert isinstance(create_model("VGG_TINY"), VGG)


# ----------------------------------------------------------------------------- sizes


def test_vgg9_parameter_count() -> None:
    widths = [64, 64, 128, 128, 256, 256, 256]
    expected = sum(conv_bn(a, b) for a, b in zip([3, *widths[:-1]], widths, strict=True))
    expected += 4096 * 128 + 2 * 128 + 128 * 10 + 10  # FC128 (no bias) + BN, FC10
    model = paper_model("vgg9")
    assert n_params(model) == expected == 2_262_474
    assert math.isclose(n_params(model), 2.26e6, rel_tol=0.01)
    assert model.hidden[0].linear.in_features == 256 * 4 * 4


def test_resnet19_parameter_count() -> None:
    expected = conv_bn(3, 64)
    cin = 64
    for width, blocks in [(128, 3), (256, 3), (512, 2)]:
        for _ in range(blocks):
            expected += conv_bn(cin, width) + conv_bn(width, width)
            if cin != width:
                expected += conv_bn(cin, width, k=1)
            cin = width
    expected += 512 * 256 + 2 * 256 + 256 * 10 + 10
    model = paper_model("resnet19")
    assert n_params(model) == expected == 12_631_114
    assert math.isclose(n_params(model), 12.63e6, rel_tol=0.01)


@pytest.mark.parametrize(
    ("name", "dim", "heads", "exact", "paper"),
    [
        ("spikformer_tiny", 192, 3, 5_903_074, 5.9e6),
        ("spikformer_small", 384, 6, 23_521_978, 23.5e6),
    ],
)
def test_spikformer_parameter_count(
    name: str, dim: int, heads: int, exact: int, paper: float
) -> None:
    pep = sum(
        conv_bn(a, b)
        for a, b in [(3, dim // 8), (dim // 8, dim // 4), (dim // 4, dim // 2), (dim // 2, dim)]
    )
    pep += conv_bn(dim, dim)  # position conv
    block = 4 * (dim * dim + 2 * dim) + (dim * 4 * dim + 2 * 4 * dim) + (4 * dim * dim + 2 * dim)
    expected = pep + 12 * block + dim * 10 + 10
    model = paper_model(name)
    assert n_params(model) == expected == exact
    assert math.isclose(n_params(model), paper, rel_tol=0.03)
    assert model.patch_embed.num_patches == 64
    attn = model.blocks[0].attn
    assert attn.num_heads == heads and attn.scale == 0.125


def test_spiking_and_ann_twins_share_every_parameter() -> None:
    for name in SMALL_MODELS:
        snn, ann = make(name).state_dict(), make(name, spiking=False).state_dict()
        assert {k: v.shape for k, v in snn.items()} == {k: v.shape for k, v in ann.items()}, name


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("spiking", [True, False])
def test_small_models_rgb_and_dvs_shapes(name: str, spiking: bool) -> None:
    rgb = make(name, spiking=spiking, timesteps=2)
    assert rgb(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert rgb.timesteps == (2 if spiking else 1)
    dvs = make(name, spiking=spiking, in_channels=2, img_size=48, num_classes=11)
    events = (torch.rand(2, 3, 2, 48, 48) < 0.2).float()  # [B, T, 2, H, W]
    assert dvs(events).shape == (2, 11)


@pytest.mark.parametrize("name", ["vgg_tiny", "spikformer_micro"])
def test_dvs128_input(name: str) -> None:
    model = make(name, in_channels=2, img_size=128, num_classes=11)
    assert model(torch.rand(1, 2, 2, 128, 128) < 0.1).shape == (1, 11)  # bool events are cast


@pytest.mark.parametrize(
    ("img_size", "patch", "tokens"),
    [(32, 4, 64), (48, 4, 144), (64, 8, 64), (128, 16, 64), (16, 2, 64), (8, 1, 64)],
)
def test_convpep_token_count(img_size: int, patch: int, tokens: int) -> None:
    assert default_patch_size(img_size) == patch
    pep = ConvPEP(2, 16, act=nn.ReLU, img_size=img_size)
    assert pep.num_patches == tokens
    out = pep(torch.rand(1, 2, 2, img_size, img_size))
    assert out.shape == (1, 2, tokens, 16)


def test_convpep_adds_the_position_embedding_before_flattening() -> None:
    pep = ConvPEP(3, 16, act=nn.ReLU, img_size=16).eval()
    x = torch.rand(1, 2, 3, 16, 16)
    grid = pep.proj(x)
    expected = rearrange(grid + pep.pos(grid), "t b d h w -> t b (h w) d")
    torch.testing.assert_close(pep(x), expected)


@pytest.mark.parametrize("spiking", [True, False])
def test_vgg9_forward_at_cifar_size(spiking: bool) -> None:
    model = make("vgg9", spiking=spiking, timesteps=1)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_input_layouts_agree() -> None:
    model = make("vgg_tiny", in_channels=2, img_size=16, timesteps=3)
    image = torch.rand(2, 2, 16, 16)
    repeated = image.unsqueeze(1).repeat(1, 3, 1, 1, 1)  # [B, T, C, H, W]
    out = model(image)
    torch.testing.assert_close(model(repeated), out)
    model.time_first = True
    torch.testing.assert_close(model(repeated.transpose(0, 1)), out)


def test_bad_inputs_name_the_problem() -> None:
    model = make("vgg_tiny", img_size=16)
    with pytest.raises(ValueError, match="in_channels=3.*C=1"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="3-D tensor"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="img_size"):
        create_model("vgg9", img_size=4)
    with pytest.raises(ValueError, match="patch_size"):
        create_model("spikformer_micro", patch_size=3)
    with pytest.raises(ValueError, match="num_heads"):
        create_model("spikformer_micro", num_heads=5)
    with pytest.raises(ValueError, match="timesteps"):
        create_model("vgg_tiny", timesteps=0)
    with pytest.raises(ValueError, match="step_mode"):
        create_model("vgg_tiny", neuron_kwargs={"step_mode": "s"})
    with pytest.raises(ValueError, match="residual"):
        create_model("resnet_tiny", residual="concat")


@given(b=st.integers(1, 3), t=st.integers(1, 4), c=st.integers(1, 3), hw=st.integers(1, 6))
@settings(max_examples=20)
def test_encode_input_layouts(b: int, t: int, c: int, hw: int) -> None:
    image = torch.rand(b, c, hw, hw)
    seq = encode_input(image, t, c)
    assert seq.shape == (t, b, c, hw, hw) and torch.equal(seq[-1], image)
    frames = torch.rand(b, t, c, hw, hw)
    torch.testing.assert_close(encode_input(frames, 99, c), frames.transpose(0, 1))
    torch.testing.assert_close(encode_input(frames, 99, c, time_first=True), frames)


# ----------------------------------------------------------------------------- spiking twin


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_neurons_are_real_and_reset_net_keeps_outputs(name: str) -> None:
    model = make(name, timesteps=2, img_size=16)
    with_reset = [m for m in model.modules() if hasattr(m, "reset")]
    assert with_reset and all(isinstance(m, LIFNeuron) for m in with_reset)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.rand(3, 3, 16, 16)
    first = model(x)
    functional.reset_net(model)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)
    functional.reset_net(model)
    torch.testing.assert_close(
        model(x), first, rtol=0, atol=0
    )  # multi-step: each call starts at rest


def test_ann_twin_has_no_neurons() -> None:
    for name in SMALL_MODELS:
        model = make(name, spiking=False)
        assert not any(isinstance(m, LIFNeuron) for m in model.modules())
        assert any(isinstance(m, nn.ReLU) for m in model.modules())


def test_beta_and_neuron_kwargs_reach_every_neuron() -> None:
    model = create_model(
        "spikformer_micro", beta=0.5, neuron_kwargs={"surrogate": "sigmoid", "threshold": 0.8}
    )
    neurons = [m for m in model.modules() if isinstance(m, LIFNeuron)]
    assert all(n.beta == 0.5 for n in neurons)
    thresholds = [n.threshold for n in neurons]
    # one attention neuron per block keeps Spikformer's threshold 0.5
    assert thresholds.count(0.5) == 2 and thresholds.count(0.8) == len(neurons) - 2


@pytest.mark.parametrize("name", ["vgg_tiny", "resnet_tiny", "spikformer_micro"])
def test_surrogate_gradient_reaches_the_first_layer(name: str) -> None:
    model = make(name, timesteps=2, img_size=16)
    model(torch.rand(4, 3, 16, 16) * 3).square().sum().backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_sew_and_membrane_residuals() -> None:
    x = torch.rand(2, 3, 16, 16) * 2
    sew = make("resnet_tiny", timesteps=2)
    membrane = make("resnet_tiny", timesteps=2, residual="membrane")
    assert sew(x).shape == membrane(x).shape == (2, 10)
    # a SEW block adds two spike trains (counts up to 2); a membrane block fires binary spikes
    assert sew.stages[0][0](sew.stem(sew.encode(x))).max() <= 2
    out = membrane.stages[0][0](membrane.stem(membrane.encode(x)))
    assert set(out.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- transformer


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    return rearrange(x, "t b n (h d) -> t b h n d", h=h)


def test_spiking_attention_is_qktv_without_softmax() -> None:
    attn = SpikingSelfAttention(
        16, 2, spiking=True, act=lambda **kw: LIFNeuron(backend="eager", **kw)
    ).eval()
    x = (torch.rand(3, 2, 5, 16) < 0.5).float()
    q, k, v = (_heads(layer(x), 2) for layer in (attn.q, attn.k, attn.v))
    assert set(q.unique().tolist()) <= {0.0, 1.0}
    mixed = rearrange(q @ k.transpose(-2, -1) @ v * 0.125, "t b h n d -> t b n (h d)")
    spikes, _ = lif_multistep(mixed, threshold=0.5, beta=0.99)
    torch.testing.assert_close(attn(x), attn.proj(spikes))


def test_ann_attention_is_softmax_attention() -> None:
    attn = SpikingSelfAttention(16, 2, spiking=False, act=nn.ReLU).eval()
    x = torch.randn(1, 2, 5, 16)
    q, k, v = (_heads(layer(x), 2) for layer in (attn.q, attn.k, attn.v))
    ref = nn.functional.scaled_dot_product_attention(q, k, v)  # scale 1 / sqrt(head_dim)
    torch.testing.assert_close(attn(x), attn.proj(rearrange(ref, "t b h n d -> t b n (h d)")))


@pytest.mark.parametrize("spiking", [True, False])
def test_blocks_are_token_wise(spiking: bool) -> None:
    model = make("spikformer_micro", spiking=spiking, timesteps=2).eval()
    tokens = model.patch_embed(model.encode(torch.rand(2, 3, 32, 32) * 2))
    assert tokens.shape == (model.timesteps, 2, 64, 32)
    perm = torch.randperm(64)
    out = model.blocks(tokens)
    # permuting the tokens permutes the output: nothing after patch_embed uses the grid
    torch.testing.assert_close(model.blocks(tokens[:, :, perm]), out[:, :, perm])
    fewer = model.blocks(tokens[:, :, :45])
    assert fewer.shape == (model.timesteps, 2, 45, 32)
    assert model.forward_head(fewer).shape == (model.timesteps, 2, 10)


# ----------------------------------------------------------------------------- sparsify


def _dense_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("spiking", [True, False])
def test_sparsify_small_models(name: str, spiking: bool) -> None:
    model = make(name, spiking=spiking, timesteps=2, img_size=16)
    layers = _dense_layers(model)
    _, report = sparsify(model, 0.4, return_report=True)
    assert len(report.swapped) == layers
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", ["spikformer_micro", "spikformer_mini"])
@pytest.mark.parametrize("spiking", [True, False])
def test_sparsify_with_patch_pruning(name: str, spiking: bool) -> None:
    model = make(name, spiking=spiking, timesteps=2)
    _, report = sparsify(model, 0.4, 0.3, return_report=True)
    assert report.patch_embed == "patch_embed"
    seen: list[torch.Size] = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [torch.Size([model.timesteps, 2, kept_count(64, 0.3), model.embed_dim])]


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("spiking", [True, False])
def test_paper_models_forward(name: str, spiking: bool) -> None:
    # Cheap: batch 1, T = 1 (a 5-D input brings its own T), evaluation mode.
    model = paper_model(name, spiking)
    size = 32 if name == "vgg9" else 16
    with torch.no_grad():
        assert model(torch.rand(1, 1, 3, size, size)).shape == (1, 10)


@pytest.mark.parametrize("name", ["vgg9", "resnet19", "spikformer_tiny"])
def test_sparsify_paper_models(name: str) -> None:
    # spikformer_small is the same class as spikformer_tiny at twice the width: left out
    # to keep this file fast.
    model = make(name, timesteps=1, img_size=8)
    layers = _dense_layers(model)
    pb = 0.3 if name.startswith("spikformer") else 0.0
    _, report = sparsify(model, 0.4, pb, return_report=True)
    assert len(report.swapped) == layers
    seen: list[torch.Size] = []
    if pb:
        model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    if pb:
        assert seen[0][2] == kept_count(64, pb)


def test_model_classes_are_importable_and_printable() -> None:
    for cls in (VGG, SpikingResNet, Spikformer):
        assert cls.__doc__
    text = repr(make("spikformer_micro"))
    assert "spiking=True, timesteps=4" in text and "num_patches=64" in text


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


NEURONS = {"neuron_kwargs": {"backend": "eager"}}


ZOO_CASES: list[tuple[str, dict[str, Any], Callable[[], Any], type[Exception], str]] = [
    # (model, kwargs, input, error, a regex the message must match)
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 1, 16, 16),
        ValueError,
        r"VGG expects in_channels=3.*C=1",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 16, 16, 3),  # channels last
        ValueError,
        r"VGG expects in_channels=3.*x\.movedim\(3, 1\)",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 32, 32),
        ValueError,
        r"VGG was built for 16x16 images.*is 32x32.*img_size=\(32, 32\)",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(3, 16, 16),
        ValueError,
        r"VGG takes \[B, C, H, W\].*3-D tensor.*unsqueeze\(0\)",
    ),
    ("vgg_tiny", {}, lambda: torch.rand(1, 2, 2, 3, 16, 16), ValueError, r"VGG takes.*6-D"),
    ("vgg_tiny", {}, lambda: torch.rand(0, 3, 16, 16), ValueError, r"VGG got an empty input"),
    ("vgg_tiny", {}, lambda: [[0.0]], TypeError, r"VGG takes a torch\.Tensor.*got list"),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 16, 16, dtype=torch.float64),
        TypeError,
        r"VGG has torch\.float32 parameters but the input is torch\.float64",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 16, 16, dtype=torch.complex64),
        TypeError,
        r"VGG takes real-valued input",
    ),
    (
        "vgg_tiny",
        {"in_channels": 2},
        lambda: torch.rand(2, 2, 4, 16, 16),  # [B, C, T, H, W]: T and C swapped
        ValueError,
        r"VGG expects in_channels=2.*\[B, T, C, H, W\].*C=4.*x\.movedim\(1, 2\)",
    ),
    (
        "vgg_tiny",
        {"spiking": False},
        lambda: torch.rand(2, 3, 8, 8),
        ValueError,
        r"VGG was built for 16x16",
    ),
    (
        "resnet_tiny",
        {},
        lambda: torch.rand(2, 2, 16, 16),
        ValueError,
        r"SpikingResNet expects in_channels=3.*C=2",
    ),
    (
        "spikformer_micro",
        {"patch_size": 4},
        lambda: torch.rand(2, 3, 2, 2),
        ValueError,
        r"Spikformer takes images of at least 4x4 \(the patch embedding downsamples by 4\).*2x2",
    ),
    (
        "spikformer_micro",
        {"time_first": True, "in_channels": 2},
        lambda: torch.rand(4, 2, 3, 16, 16),
        ValueError,
        r"Spikformer expects in_channels=2.*read as \[T, B, C, H, W\].*time_first=True",
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "make_input", "error", "match"),
    ZOO_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ZOO_CASES)],
)
def test_zoo_models_name_themselves_and_the_shape_they_take(
    name: str,
    kwargs: dict[str, Any],
    make_input: Callable[[], Any],
    error: type[Exception],
    match: str,
) -> None:
    model = create_model(name, img_size=16, timesteps=2, **{**NEURONS, **kwargs}).train()
    before = snapshot(model)  # train mode: a forward that ran would move the BN statistics
    with pytest.raises(error, match=match):
        model(make_input())
    assert_unchanged(model, before)


def test_zoo_input_check_leaves_autocast_and_event_counts_alone() -> None:
    model = create_model("vgg_tiny", img_size=8, timesteps=2, **NEURONS).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.rand(2, 3, 8, 8, dtype=torch.bfloat16)).shape == (2, 10)
    assert model(torch.rand(2, 2, 3, 8, 8) < 0.5).dtype == torch.float32  # bool events
    assert model.double()(torch.rand(2, 2, 3, 8, 8) < 0.5).dtype == torch.float64


def test_zoo_input_check_adds_no_tracer_warnings() -> None:
    model = create_model("vgg_tiny", img_size=8, timesteps=2, **NEURONS).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(model, torch.rand(2, 3, 8, 8), check_trace=False)
    mine = [w for w in caught if w.filename.endswith(("_input.py", "blocks.py"))]
    assert mine == []


def test_min_img_size_follows_the_constructor_arguments() -> None:
    assert min_img_size("vgg_small") == 4 and min_img_size("vgg9") == 8
    assert min_img_size("vgg_tiny", config=[8, "A", 8, "A", 8, "M"]) == 8
    assert min_img_size("spikformer_micro") == 1
    assert min_img_size("spikformer_micro", patch_size=8) == 8
    assert min_img_size("resnet19") == 1


def test_resolution_below_the_models_smallest(tmp_path: Path) -> None:
    cfg = tiny(out=str(tmp_path / "run"), model="vgg_small", resolution=2)
    with pytest.raises(
        ConfigError, match=r"model 'vgg_small' takes images of at least 4x4.*set resolution to 4"
    ) as info:
        Trainer(cfg).run()
    assert info.value.field == "resolution" and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--timesteps", "100000000000000000000", "timesteps must be at most 4096"),
        ("--resolution", "1000000000", "resolution must be at most 4096"),
    ],
)
def test_huge_sizes_are_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    from spikelottery.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["run", flag, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and flag in err and "Traceback" not in err
    assert not out.exists()
