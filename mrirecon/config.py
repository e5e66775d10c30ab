"""Experiment configuration: typed defaults in code, small YAML files with only the differences,
dotted command-line overrides (`train.max_epochs=3 model.prox.channels=16`).

Unknown keys, wrong types and impossible values fail before anything runs, naming the key.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message names the offending key."""


@dataclass
class DataConfig:
    kind: str = "knee2d"                 # knee2d | brain2d | knee3d | cine
    root: str = "data/synthetic/knee2d"  # folder with train/ val/ test/ sub-folders of .h5 files
    volume: bool = False                 # knee3d: whole 3D volumes instead of ky-kz slices
    mask: dict = field(default_factory=lambda: {"type": "random", "center_fractions": [0.08], "accelerations": [4]})
    maps: str = "file"                   # file (cached ESPIRiT, see mrirecon.data.coil_maps) | online
    acquisitions: list | None = None     # fastMRI acquisition filter, e.g. [CORPD_FBK]
    crop_readout: bool = True            # drop fastMRI's 2x readout oversampling (exact)
    sample_rate: float = 1.0             # fraction of files used
    batch_size: int = 1
    num_workers: int = 0


@dataclass
class ModelConfig:
    num_unrolls: int = 8
    dc: str = "pgd"                      # pgd | modl
    share_weights: bool = False
    prox: dict = field(default_factory=lambda: {"name": "resnet", "channels": 64, "num_blocks": 2})
    num_maps: int = 1
    step_size_init: float | None = None  # PGD step alpha_k (default 1, or step_size_max / 2 when bounded)
    step_size_max: float | None = None   # bound alpha_k < max (invertible PGD needs alpha < 1/||A^H A||)
    lam_init: float = 4.0                # MoDL lambda (GLEAM's MoDL config: 4)
    cg_iters: int = 10                   # MoDL CG iterations (GLEAM: 10)


@dataclass
class TrainConfig:
    strategy: str = "e2e"                # e2e | checkpoint | invertible | gleam
    num_modules: int = 1                 # gleam: N unrolls split into M modules
    loss: str = "l1"                     # l1 (on complex magnitude, GLEAM) | l2 | ssim
    lr: float = 1e-4
    weight_decay: float = 1e-4
    scheduler: dict | None = None        # {name: step, step_size: 10, gamma: 0.5} | {name: cosine}
    max_epochs: int = 10
    max_steps: int = -1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    invertible: dict = field(default_factory=dict)  # MEL options (fixed-point iterations, ...)


@dataclass
class Config:
    name: str = "experiment"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "data.kind": ("knee2d", "brain2d", "knee3d", "cine"),
    "data.maps": ("file", "online"),
    "model.dc": ("pgd", "modl"),
    "train.strategy": ("e2e", "checkpoint", "invertible", "gleam"),
    "train.loss": ("l1", "l2", "ssim"),
}
POSITIVE = ("model.num_unrolls", "model.num_maps", "model.cg_iters", "train.num_modules", "data.batch_size",
            "train.max_epochs", "train.lr", "train.check_val_every_n_epoch", "train.devices")


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    base = origin or hint
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if base in (float, str, list, dict) and not isinstance(value, base):
        raise ConfigError(f"{key}: expected {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def _merge(obj: Any, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of settings, got {value!r}")
            _merge(current, value, path + ".")
        elif isinstance(current, dict) and isinstance(value, dict):
            # Settings of a named kind (prox name, mask type) merge into the current ones, unless
            # the kind changes: then the old kind's settings would not apply, so start afresh.
            kind = next((k for k in ("name", "type") if k in current), None)
            if kind and kind in value and value[kind] != current[kind]:
                setattr(obj, key, copy.deepcopy(value))
            else:
                merged = copy.deepcopy(current)
                merged.update(value)
                setattr(obj, key, merged)
        else:
            setattr(obj, key, _check_type(path, value, hints[key]))


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _nest(keys: list[str], value: Any) -> dict:
    out: dict = value
    for k in reversed(keys):
        out = {k: out}
    return out


def validate(cfg: Config) -> Config:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
    for key in POSITIVE:
        section, name = key.split(".")
        if not getattr(getattr(cfg, section), name) > 0:
            raise ConfigError(f"{key}: must be > 0, got {getattr(getattr(cfg, section), name)!r}")
    if not 0 < cfg.data.sample_rate <= 1:
        raise ConfigError(f"data.sample_rate: must be in (0, 1], got {cfg.data.sample_rate}")
    if cfg.data.volume and cfg.data.kind != "knee3d":
        raise ConfigError("data.volume: only knee3d data has whole volumes")
    if not isinstance(cfg.model.prox.get("name"), str):
        raise ConfigError("model.prox.name: missing (e.g. resnet or unet)")
    from .models.registry import registered_prox

    if cfg.model.prox["name"] not in registered_prox():
        raise ConfigError(f"model.prox.name: unknown prox {cfg.model.prox['name']!r}; "
                          f"registered: {sorted(registered_prox())}")
    if "type" not in cfg.data.mask:
        raise ConfigError("data.mask.type: missing (random, equispaced, equispaced_fraction, poisson, kyt)")
    from .data.subsample import build_mask_func

    try:
        build_mask_func(cfg.data.mask)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data.mask: {e}") from None
    if cfg.train.strategy == "gleam" and cfg.model.num_unrolls % cfg.train.num_modules:
        raise ConfigError(f"train.num_modules: {cfg.train.num_modules} does not divide "
                          f"model.num_unrolls={cfg.model.num_unrolls}")
    if cfg.train.strategy != "gleam" and cfg.train.num_modules != 1:
        raise ConfigError("train.num_modules: only the gleam strategy splits the network into modules")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> Config:
    """Defaults <- `base` (e.g. a checkpoint's config) <- YAML file <- dotted overrides, then validated."""
    cfg = Config()
    if base is not None:
        _merge(cfg, base)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(cfg, data)
    for text in overrides:
        keys, value = _parse_override(text)
        _merge(cfg, _nest(keys, value))
    return validate(cfg)


def from_dict(data: dict) -> Config:
    cfg = Config()
    _merge(cfg, data)
    return validate(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    from .atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
