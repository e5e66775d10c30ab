"""The demo's configuration: GLEAM by default for every kind, the user's overrides win."""
from __future__ import annotations

import pytest

from mrirecon.config import ConfigError
from mrirecon.demo import demo_config


@pytest.mark.parametrize("kind", ["knee2d", "brain2d", "knee3d", "cine"])
def test_demo_trains_with_gleam_by_default(kind, tmp_path):
    cfg = demo_config(kind, tmp_path, [])
    assert cfg.train.strategy == "gleam" and cfg.train.num_modules == 2
    assert cfg.model.num_unrolls % cfg.train.num_modules == 0
    assert str(cfg.output_dir) == str(tmp_path / "runs")


def test_demo_overrides_come_after_the_defaults(tmp_path):
    cfg = demo_config("knee2d", tmp_path, ["train.strategy=e2e", "train.num_modules=1", "train.max_epochs=3"])
    assert (cfg.train.strategy, cfg.train.num_modules, cfg.train.max_epochs) == ("e2e", 1, 3)
    with pytest.raises(ConfigError, match="num_modules"):
        demo_config("knee2d", tmp_path, ["model.num_unrolls=5"])  # 2 modules do not divide 5 unrolls
