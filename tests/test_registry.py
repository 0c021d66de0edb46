"""The registry shape (src/spikelottery/registry.py) and the five registries built on it."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikelottery.data import DATASETS, dataset_info
from spikelottery.energy.hardware import (
    HARDWARE_PRESETS,
    HardwarePreset,
    register_hardware_preset,
    resolve_preset,
)
from spikelottery.engine import METHODS, SEARCH_METHODS, ConfigError, TrainConfig
from spikelottery.models import MODELS, create_model, register_model
from spikelottery.registry import DuplicateNameError, Registry, UnknownNameError


def test_register_lookup_and_listing() -> None:
    reg: Registry[int] = Registry("thing")
    assert reg.register("One", 1) == 1

    @reg.register("two")
    def two() -> int:
        return 2

    assert reg["one"] == 1 and reg[" TWO "] is two
    assert list(reg) == ["one", "two"] and reg.names(sort=True) == ["one", "two"]
    assert "ONE" in reg and "three" not in reg and 3 not in reg  # type: ignore[comparison-overlap]
    assert reg.get("three", 0) == 0  # a Mapping: get() works through KeyError


def test_unknown_name_lists_the_names_and_a_close_match() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UnknownNameError, match=r"unknown thing 'alpah'; valid names: alpha, beta "
                       r"\(did you mean 'alpha'\?\)"):  # fmt: skip
        reg["alpah"]
    with pytest.raises(ValueError, match="valid names"):  # also a ValueError
        reg["zzz"]
    with pytest.raises(TypeError, match="non-empty str"):
        reg.register("", 3)


def test_a_name_is_never_re_pointed_silently() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1, aliases=("short",))
    with pytest.raises(DuplicateNameError, match="'a' is registered already"):
        reg.register("A", 2)
    with pytest.raises(DuplicateNameError, match="'short' is registered already"):
        reg.register("b", 2, aliases=("short",))
    assert reg["short"] == 1 and "b" not in reg  # the failed registration left nothing
    reg.register("a", 3, overwrite=True)
    assert reg["a"] == 3 and reg["short"] == 3
    assert reg.unregister("a") == 3 and "short" not in reg


def test_deprecated_alias_warns_with_the_new_name() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("new", 1)
    reg.alias("old", "new", deprecated=True)
    with pytest.warns(FutureWarning, match="'old' is now 'new'"):
        assert reg["old"] == 1
    assert reg.aliases() == {"old": "new"}


@given(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), unique=True, max_size=8))
def test_registration_order_is_kept(names: list[str]) -> None:
    reg: Registry[int] = Registry("thing")
    for i, name in enumerate(names):
        reg.register(name, i)
    assert list(reg) == names and [reg[n] for n in names] == list(range(len(names)))


def test_hardware_preset_for_another_node_does_not_re_point_the_short_name() -> None:
    # Before the registry, a new "fp32-..." preset re-pointed preset="fp32" to itself.
    register_hardware_preset(HardwarePreset("fp32-7nm", 1.31, 0.38, 32, "test"))
    try:
        assert resolve_preset("fp32").name == "fp32-45nm"
        assert resolve_preset("fp32-7nm").e_mac == 1.31
        with pytest.raises(DuplicateNameError):
            register_hardware_preset(
                HardwarePreset("fp32-5nm", 1.0, 0.3, 32, "t"), aliases=("fp32",)
            )
        with pytest.raises(DuplicateNameError):
            register_hardware_preset(HardwarePreset("fp32-45nm", 1.0, 0.3, 32, "t"))
    finally:
        HARDWARE_PRESETS.unregister("fp32-7nm")
    assert "fp32-5nm" not in HARDWARE_PRESETS
    with pytest.raises(ValueError, match=r"preset must be one of .* got preset='fp23'"):
        resolve_preset("fp23")


def test_a_registered_model_is_built_and_checked_by_name() -> None:
    from torch import nn

    @register_model("tmp_linear", description="test", hidden=3)
    def tmp_linear(*, spiking, num_classes, in_channels, img_size, timesteps, beta, hidden=1):  # type: ignore[no-untyped-def]
        return nn.Linear(hidden, num_classes)

    try:
        assert create_model("TMP_LINEAR", num_classes=4).in_features == 3
        assert TrainConfig(model="tmp_linear", out=None).model == "tmp_linear"
        with pytest.raises(TypeError, match="must take the keyword"):
            register_model("tmp_bad", lambda hidden: nn.Linear(hidden, 2))
    finally:
        MODELS.unregister("tmp_linear")
    with pytest.raises(ConfigError, match="did you mean 'vgg_tiny'"):
        TrainConfig(model="vgg_tiyn", out=None)


def test_cifar_is_a_spec_not_a_special_case() -> None:
    spec = DATASETS["cifar10"]
    assert spec.fixed_resolution and spec.downloadable and spec.augmentable
    assert not DATASETS["digits"].downloadable
    assert dataset_info("Digits-DVS").name == "digits_dvs"
    with pytest.raises(ConfigError, match="32x32"):
        TrainConfig(dataset="cifar100", resolution=16, out=None)


def test_the_search_methods_and_methods_are_registries() -> None:
    assert list(SEARCH_METHODS) == ["imp", "random", "random-frozen", "scores"] or set(
        SEARCH_METHODS
    ) >= {"scores", "imp", "random", "random-frozen"}
    assert SEARCH_METHODS["imp"].modes == ("lt",) and SEARCH_METHODS["scores"].trains_scores
    assert METHODS["mpslt"].fixed["mode"] == "mp"
    with pytest.raises(ConfigError, match="unknown search method 'imq'.*did you mean 'imp'"):
        TrainConfig(search="imq", out=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig(energy_preset="int8", out=None).energy_preset == "int8-45nm"


def test_an_alias_that_spells_the_name_keeps_the_entry() -> None:
    """``aliases=("MyNet",)`` for ``"mynet"`` normalises to the name itself: registering
    it deleted the entry, and the lookup ended in a raw KeyError while ``in`` said yes."""
    reg: Registry[int] = Registry("thing")
    reg.register("mynet", 1, aliases=("MyNet", "other", "OTHER"))
    assert reg["mynet"] == 1 and reg["MYNET"] == 1 and reg["other"] == 1
    assert reg.names() == ["mynet"] and reg.aliases() == {"other": "mynet"}


def test_overwriting_an_entry_with_an_alias_leaves_no_dangling_alias() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    reg.alias("aa", "a")
    reg.register("b", 2, overwrite=True, aliases=("a",))
    assert reg["a"] == 2 and reg["aa"] == 2 and reg.names() == ["b"]


def test_a_method_that_sets_an_unknown_setting_is_refused_when_registered() -> None:
    """It used to register, and fail only at use: TrainConfig(method=...) blamed the
    caller ("build the config with TrainConfig.for_method") and for_method raised a raw
    TypeError."""
    from spikelottery.engine import MethodPreset, register_method

    with pytest.raises(ConfigError, match=r"fixed names 'serach'.*did you mean 'search'"):
        register_method("my-typo", MethodPreset({"serach": "scores"}, column="c"))
    with pytest.raises(ConfigError, match=r"defaults names 'nokey'"):
        register_method("my-typo", MethodPreset({"mode": "lt"}, {"nokey": 1}))
    assert "my-typo" not in METHODS


def test_a_builder_that_returns_no_module_is_named() -> None:
    """It used to hand ``None`` on, to fail later far from the registration."""

    @register_model("review-returns-none")
    def returns_none(**_kwargs: object) -> None:
        return None

    try:
        with pytest.raises(TypeError, match="'returns_none' returned NoneType, not an nn.Module"):
            create_model("review-returns-none")
    finally:
        MODELS.unregister("review-returns-none")


def test_the_builtin_methods_set_only_trainconfig_settings() -> None:
    """The built-in presets are registered before TrainConfig exists, so register_method's
    check of the names cannot run on them: it runs here."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in METHODS:
        preset = METHODS[name]
        assert set(preset.fixed) | set(preset.defaults) <= known, name
