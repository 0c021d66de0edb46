"""Tests of the setting declarations: one field declares its check, help, group and flag.

Adding a setting must be one edit: the test below adds a field in a subclass and gets
its validation, its docstring entry, its flag and its runtime status from that alone.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from spikelottery.cli import add_config_flags
from spikelottery.engine import ConfigError, TrainConfig
from spikelottery.engine.config import field_defaults, runtime_fields
from spikelottery.engine.settings import (
    Setting,
    choice,
    document_settings,
    format_default,
    integer,
    plain,
    setting,
    setting_of,
)


def test_every_field_declares_help_check_and_group() -> None:
    for f in dataclasses.fields(TrainConfig):
        declared = setting_of(f)
        assert isinstance(declared, Setting)
        assert declared.help.strip() and declared.help.rstrip().endswith("."), f.name
        assert callable(declared.check) and declared.group, f.name
        # Each field's check accepts its own default.
        default = field_defaults()[f.name]
        assert declared.check(f.name, default) == default, f.name


def test_the_docstring_lists_every_field_with_its_default() -> None:
    doc = TrainConfig.__doc__ or ""
    attributes = doc[doc.index("Attributes:") :]
    for line in attributes.splitlines()[1:]:
        assert line.startswith("    ") and len(line) <= 88, line
    for f in dataclasses.fields(TrainConfig):
        assert f"\n    {f.name}: " in attributes, f.name
    assert "pa: Fraction of weights REMOVED" in attributes
    assert "Default: ``0.4``." in attributes and "Default: ``'vgg_small'``." in attributes
    assert "Default: ``{}``." in attributes  # model_kwargs' default_factory


def test_adding_a_field_is_one_edit() -> None:
    @document_settings
    @dataclass
    class Extended(TrainConfig):
        warmup_epochs: int = setting(
            0, help="Warm-up epochs.", check=integer(0), group="optimisation"
        )
        schedule: str = setting(
            "cosine",
            help="The learning-rate schedule.",
            check=choice(("cosine", "constant")),
            group="schedules",
            runtime=True,
        )

    # validation
    assert Extended(warmup_epochs=2, out=None).warmup_epochs == 2
    with pytest.raises(ConfigError) as info:
        Extended(warmup_epochs=-1)
    assert info.value.field == "warmup_epochs"
    with pytest.raises(ConfigError, match="cosine, constant"):
        Extended(schedule="step")
    # documentation
    assert "warmup_epochs: Warm-up epochs. Default: ``0``." in (Extended.__doc__ or "")
    # resume compatibility and defaults
    assert runtime_fields(Extended) == runtime_fields() | {"schedule"}
    assert field_defaults(Extended)["warmup_epochs"] == 0
    # the command line
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Extended)
    args = parser.parse_args(["--warmup-epochs", "3", "--schedule", "constant"])
    assert vars(args) == {"warmup_epochs": 3, "schedule": "constant"}
    assert "Warm-up epochs. (default: 0)" in " ".join(parser.format_help().split())
    assert "schedules:" in parser.format_help()
    # round trip through a dict (a config file)
    cfg = Extended.from_dict({"warmup_epochs": 1, "out": None})
    assert cfg.to_dict()["warmup_epochs"] == 1


def test_a_field_without_a_declaration_is_refused() -> None:
    with pytest.raises(TypeError, match="'bare'.*setting"):

        @document_settings
        @dataclass
        class Bare(TrainConfig):
            bare: int = 1


def test_plain_and_format_default() -> None:
    assert plain("``T``: see :func:`~a.b.c` and :data:`x.Y`.") == "T: see c and x.Y."
    assert [format_default(v) for v in (None, False, {"a": 1}, "runs/run", 1e-3)] == [
        "none",
        "false",
        '{"a": 1}',
        "runs/run",
        "0.001",
    ]
