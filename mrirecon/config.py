"""Experiment configuration: typed defaults in code, small YAML files with only the differences,
dotted command-line overrides (`train.max_epochs=3 model.prox.channels=16`).

Unknown keys, wrong types and impossible values fail before anything runs, naming the key. YAML (files
and override values) is read with YAML 1.2 numbers (`1e-3` is a float, not a string); a duplicate key
or a syntax error is named with its file, line and column.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
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
    # type: poisson also takes bank (precomputed training masks per setting, default 256; 0 = a fresh draw
    # every time) and bank_cache (their folder, default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks)
    maps: str = "file"                   # file (ESPIRiT maps from the maps cache, see mrirecon.data.coil_maps) | online
    maps_cache: str | None = None        # coil-map cache folder (default $MRIRECON_MAPS_CACHE or ~/.cache/mrirecon/maps)
    espirit: dict = field(default_factory=dict)  # ESPIRiT settings: calib_width, kernel_width, thresh, crop
    target: str = "rss"                  # rss (fastMRI's reconstruction_rss) | sense (GLEAM's SENSE image)
    acquisitions: list | None = None     # fastMRI acquisition filter, e.g. [CORPD_FBK]
    crop_readout: bool = True            # drop fastMRI's 2x readout oversampling (exact)
    sample_rate: float = 1.0             # fraction of files used
    batch_size: int = 1
    num_workers: int = 0
    scan_values: bool = True             # read every array once when the dataset is built (NaN/Inf, all-zero maps)


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
class PipelineConfig:
    """Pipeline-parallel GLEAM (`train.strategy: gleam_pipeline`, launched by torchrun): the world of
    K x D processes is K stages (each a contiguous group of GLEAM modules) times D data-parallel replicas."""

    stages: int | None = None            # K; default: world size / replicas
    replicas: int = 1                    # D: replicas per stage, gradients averaged within a stage's group
    timeout_s: float = 300.0             # a stage that waits this long on another one stops with an error naming it
    backend: str = "auto"                # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    threads: int | None = None           # torch threads per process; default: OMP_NUM_THREADS, else cores / local processes


@dataclass
class TrainConfig:
    strategy: str = "e2e"                # e2e | checkpoint | invertible | gleam | gleam_pipeline
    num_modules: int | None = None       # gleam: N unrolls in M modules; default one unroll per module (GLEAM's)
    loss: str = "l1"                     # l1 (on complex magnitude, GLEAM) | l2 | ssim
    lr: float = 1e-4
    weight_decay: float = 1e-4
    scheduler: dict | None = None        # {name: step, step_size: 10, gamma: 0.5} | {name: cosine}
    max_epochs: int = 10
    max_steps: int = -1                  # training batches (every strategy; a GLEAM batch steps every module once)
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    invertible: dict = field(default_factory=dict)  # MEL options (fixed-point iterations, ...)
    nonfinite: str = "stop"              # a NaN/Inf loss or gradient: stop (error) | skip (drop that step)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


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
    "data.target": ("rss", "sense"),
    "model.dc": ("pgd", "modl"),
    "train.strategy": ("e2e", "checkpoint", "invertible", "gleam", "gleam_pipeline"),
    "train.pipeline.backend": ("auto", "gloo", "nccl"),
    "train.loss": ("l1", "l2", "ssim"),
    "train.nonfinite": ("stop", "skip"),
}
POSITIVE = ("model.num_unrolls", "model.num_maps", "model.cg_iters", "data.batch_size",
            "train.max_epochs", "train.lr", "train.check_val_every_n_epoch", "train.devices",
            "train.pipeline.replicas", "train.pipeline.timeout_s")
POSITIVE_OR_NONE = ("train.num_modules", "train.pipeline.stages", "train.pipeline.threads")
GREEDY = ("gleam", "gleam_pipeline")  # strategies that split the network into modules


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats (`1e-3` is a number, where YAML 1.1 reads a string)
    and duplicate keys refused (YAML 1.1 silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, source: str = "<override>") -> Any:
    """YAML text -> Python value with the config loader; a syntax error or duplicate key raises
    ConfigError naming `source` and the line."""
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from None


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
    return key.strip().split("."), parse_yaml(raw, f"override {text!r}") if raw.strip() else None


def _nest(keys: list[str], value: Any) -> dict:
    out: dict = value
    for k in reversed(keys):
        out = {k: out}
    return out


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for name in key.split("."):
        value = getattr(value, name)
    return value


def _require(key: str, value: Any, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {rule}, got {value!r}")


def _check_ranges(cfg: Config) -> None:
    """Values that parse but cannot be meant: non-finite numbers, empty networks, impossible masks."""
    t, m, d = cfg.train, cfg.model, cfg.data
    _require("train.lr", t.lr, math.isfinite(t.lr) and t.lr > 0, "a finite number > 0")
    _require("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0,
             "a finite number >= 0")
    _require("train.max_steps", t.max_steps, t.max_steps == -1 or t.max_steps >= 1, "-1 (no limit) or >= 1")
    _require("train.log_every_n_steps", t.log_every_n_steps, t.log_every_n_steps >= 1, ">= 1")
    _require("train.limit_train_batches", t.limit_train_batches,
             math.isfinite(t.limit_train_batches) and t.limit_train_batches > 0, "a finite number > 0")
    _require("train.limit_val_batches", t.limit_val_batches,
             math.isfinite(t.limit_val_batches) and t.limit_val_batches >= 0, "a finite number >= 0")
    _require("data.num_workers", d.num_workers, d.num_workers >= 0, ">= 0")
    _require("model.lam_init", m.lam_init, math.isfinite(m.lam_init) and m.lam_init > 0, "a finite number > 0")
    for key in ("step_size_init", "step_size_max"):
        value = getattr(m, key)
        _require(f"model.{key}", value, value is None or (math.isfinite(value) and value > 0),
                 "a finite number > 0 (or null for the default)")
    for key in ("channels", "num_blocks", "base_channels", "depth"):
        if key in m.prox:
            value = m.prox[key]
            _require(f"model.prox.{key}", value, isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                     "an integer >= 1")
    for key, value in m.prox.items():
        if isinstance(value, float) and not math.isfinite(value):
            _require(f"model.prox.{key}", value, False, "finite")
    _check_mask_bank(d.mask)
    fractions, accelerations = d.mask.get("center_fractions"), d.mask.get("accelerations")
    if isinstance(fractions, list) and isinstance(accelerations, list):
        for f, a in zip(fractions, accelerations):
            # The centre alone would sample more than 1/R of the lines: the real acceleration is lower
            # than the one reported (0.9 at 4x is 1.1x).
            if isinstance(f, (int, float)) and isinstance(a, (int, float)) and a > 0 and f > 1 / a:
                raise ConfigError(f"data.mask.center_fractions: {f} with acceleration {a} samples more than 1/{a:g} "
                                  f"of the lines in the centre alone (effective acceleration at most {1 / f:.2g}x); "
                                  f"need center_fraction <= 1/acceleration = {1 / a:.3g}")


def _check_mask_bank(mask: dict) -> None:
    """data.mask.bank / bank_cache: Poisson-disc training masks from a bank (mrirecon.data.mask_bank)."""
    for key in ("bank", "bank_cache"):
        if key in mask and mask.get("type") != "poisson":
            raise ConfigError(f"data.mask.{key}: only poisson masks have a mask bank (the other types cost "
                              f"microseconds to draw), got type {mask.get('type')!r}; remove data.mask.{key}")
    if "bank" in mask:
        bank = mask["bank"]
        _require("data.mask.bank", bank, isinstance(bank, int) and not isinstance(bank, bool) and bank >= 0,
                 "an integer >= 0 (training masks per setting; 0 = draw every training mask afresh)")
    if "bank_cache" in mask:
        folder = mask["bank_cache"]
        _require("data.mask.bank_cache", folder, folder is None or isinstance(folder, str),
                 "a folder or null (default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks)")


def validate(cfg: Config) -> Config:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
    for key in POSITIVE + POSITIVE_OR_NONE:
        value = _get(cfg, key)
        if not (value is None and key in POSITIVE_OR_NONE) and not value > 0:
            raise ConfigError(f"{key}: must be > 0, got {value!r}")
    if not 0 < cfg.data.sample_rate <= 1:
        raise ConfigError(f"data.sample_rate: must be in (0, 1], got {cfg.data.sample_rate}")
    _check_ranges(cfg)
    if cfg.data.volume and cfg.data.kind != "knee3d":
        raise ConfigError("data.volume: only knee3d data has whole volumes")
    if not isinstance(cfg.model.prox.get("name"), str):
        raise ConfigError("model.prox.name: missing (e.g. resnet or unet)")
    from .models.registry import registered_prox

    if cfg.model.prox["name"] not in registered_prox():
        raise ConfigError(f"model.prox.name: unknown prox {cfg.model.prox['name']!r}; "
                          f"registered: {sorted(registered_prox())}")
    from .data.datasets import geometry
    from .models.registry import build_prox

    import torch

    try:  # a prox refuses the settings and image layouts it cannot handle in its constructor: say so now
        with torch.random.fork_rng(devices=[]):  # checking a config must not move the seeded generator
            build_prox(cfg.model.prox, 2 * cfg.model.num_maps, geometry(cfg.data.kind, cfg.data.volume).conv_dims)
    except ValueError as e:
        raise ConfigError(f"model.prox: {e}") from None
    if "type" not in cfg.data.mask:
        raise ConfigError("data.mask.type: missing (random, equispaced, equispaced_fraction, poisson, kyt)")
    from .data.subsample import build_mask_func

    try:
        build_mask_func(cfg.data.mask)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data.mask: {e}") from None
    t = cfg.train
    if t.strategy in GREEDY:
        if t.num_modules is None:  # GLEAM's own default: one unroll per module
            t.num_modules = cfg.model.num_unrolls
        if cfg.model.num_unrolls % t.num_modules:
            raise ConfigError(f"train.num_modules: {t.num_modules} does not divide "
                              f"model.num_unrolls={cfg.model.num_unrolls}")
    else:
        if t.num_modules not in (None, 1):
            raise ConfigError(f"train.num_modules: only the gleam strategies split the network into modules "
                              f"(train.strategy={t.strategy!r}, num_modules={t.num_modules})")
        t.num_modules = 1
    if t.strategy == "gleam_pipeline" and t.pipeline.stages is not None and t.pipeline.stages > t.num_modules:
        raise ConfigError(f"train.pipeline.stages: {t.pipeline.stages} stages for {t.num_modules} GLEAM modules; "
                          "every stage needs at least one module")
    if t.strategy == "gleam_pipeline" and t.pipeline.stages is not None and t.num_modules % t.pipeline.stages:
        raise ConfigError(f"train.pipeline.stages: {t.pipeline.stages} does not divide "
                          f"train.num_modules={t.num_modules}")
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
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
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
