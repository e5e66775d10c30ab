"""Experiment configuration: typed defaults in code, small YAML files with only the differences,
dotted command-line overrides (`train.max_epochs=3 model.prox.channels=16`).

The grammar:
- Order: defaults <- the files a config inherits (`base: ../knee2d.yaml`, or a list, the first applied
  first; paths relative to the file; a base may have its own base) <- the file <- dotted overrides.
- A section that selects a registered kind names it with `name` and holds that kind's options beside it:
  `model.prox: {name: resnet, channels: 32}`, `data.mask: {name: random, ...}`,
  `train.scheduler: {name: cosine}`. Mapping into such a section merges into the current options, unless
  `name` changes: then the old kind's options are dropped. A plain value that picks one of a fixed set keeps
  its own word: `data.kind` (the data kind), `model.dc`, `train.strategy`, `train.loss`.
- Old names still read (configs and checkpoints written before): `data.mask.type` is `data.mask.name`;
  prox options renamed by the prox's registration (`unet`: base_channels -> channels, depth -> num_blocks;
  `scale_equivariant`: num_layers -> num_blocks). `train.invertible.cg_iters` / `cg_tol` are refused with
  their new names (`inverse_cg_iters` / `inverse_cg_tol`; `model.cg_iters` is MoDL's data consistency).

Unknown keys, wrong types and impossible values fail before anything runs, naming the key (and for a key in
a file, the file and line). YAML (files and override values) is read with YAML 1.2 numbers (`1e-3` is a float,
not a string); a duplicate key or a syntax error is named with its file, line and column. This module is
schema and YAML only: a registry checks its own section (`register_section_check`: the prox registry checks
`model.prox` by its constructor's signature, without building one).

Why not OmegaConf (structured configs): it reports a bad key by its path but not the file and line, gives no
place for the rules above (old names, `name` resetting a section), and has no Union types (`dict | None`);
dataclasses plus this small merger (YAML 1.2 numbers, located mappings) cost less than adapting it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message names the offending key."""


@dataclass
class DataConfig:
    kind: str = "knee2d"                 # a registered data kind (mrirecon/data/kinds.py): knee2d | brain2d | knee3d | cine
    root: str = "data/synthetic/knee2d"  # folder with train/ val/ test/ sub-folders of .h5 files
    volume: bool = False                 # knee3d: whole 3D volumes instead of ky-kz slices
    mask: dict = field(default_factory=lambda: {"name": "random", "center_fractions": [0.08], "accelerations": [4]})
    # name: poisson also takes bank (precomputed training masks per setting, default 256; 0 = a fresh draw
    # every time) and bank_cache (their folder, default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks)
    maps: str = "file"                   # file (ESPIRiT maps from the maps cache, see mrirecon.data.coil_maps) | online
    maps_cache: str | None = None        # coil-map cache folder (default $MRIRECON_MAPS_CACHE or ~/.cache/mrirecon/maps)
    maps_store: str = "coarse"           # coarse (ESPIRiT's coarse grid, ~1% of the maps, expanded when read) | full
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
    cg_iters: int = 10                   # MoDL data consistency: CG iterations (GLEAM: 10)


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
    grad_clip_norm: float | None = None  # clip each optimizer's gradients (a GLEAM module's) to this 2-norm; None: off
    scheduler: dict | None = None        # {name: step, step_size: 10, gamma: 0.5} | {name: cosine}
    max_epochs: int = 10
    max_steps: int = -1                  # training batches (every strategy; a GLEAM batch steps every module once)
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1                     # processes (GPUs) per node; > 1: Lightning's DDP
    num_nodes: int = 1                   # nodes of a data-parallel run, each started by a launcher (mrirecon launch --nnodes)
    ddp_timeout_s: float = 300.0         # DDP: a process that waits this long on another one (dead, stopped) ends the run
    precision: str = "32-true"
    # MEL's inversion: prox_iters, prox_tol, inverse_cg_iters, inverse_cg_tol (strategies.Invertible)
    invertible: dict = field(default_factory=dict)
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
    "data.maps": ("file", "online"),
    "data.maps_store": ("coarse", "full"),
    "data.target": ("rss", "sense"),
    "model.dc": ("pgd", "modl"),
    "train.pipeline.backend": ("auto", "gloo", "nccl"),
    "train.loss": ("l1", "l2", "ssim"),
    "train.nonfinite": ("stop", "skip"),
}
POSITIVE = ("model.num_unrolls", "model.num_maps", "model.cg_iters", "data.batch_size",
            "train.max_epochs", "train.lr", "train.check_val_every_n_epoch", "train.devices", "train.num_nodes",
            "train.ddp_timeout_s",
            "train.pipeline.replicas", "train.pipeline.timeout_s")
POSITIVE_OR_NONE = ("train.num_modules", "train.grad_clip_norm", "train.pipeline.stages", "train.pipeline.threads")
# Old names read from files, overrides and checkpoints: {dotted key of a section: {old: new}}.
RENAMED = {"data.mask": {"type": "name"}}
# Old names refused, with what to write instead (their meaning changed or was ambiguous).
REFUSED = {
    "train.invertible.cg_iters": "train.invertible.inverse_cg_iters (MEL's CG inversion of the gradient step; "
                                 "model.cg_iters is MoDL's data consistency)",
    "train.invertible.cg_tol": "train.invertible.inverse_cg_tol",
}


class _Mapping(dict):
    """A YAML mapping that remembers where it was written: `source` (file name) and each key's line."""

    source: str = ""
    lines: dict


def _where(updates: dict, key: Any) -> str:
    """'FILE, line N: ' for a key read from a file, '' otherwise."""
    if isinstance(updates, _Mapping) and key in updates.lines:
        if updates.source.startswith("override "):  # one line: naming the override is enough
            return f"{updates.source}: "
        return f"{updates.source}, line {updates.lines[key] + 1}: "
    return ""


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats (`1e-3` is a number, where YAML 1.1 reads a string),
    duplicate keys refused (YAML 1.1 silently keeps the last one), and mappings that remember their lines."""

    source = "<yaml>"

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
        out = super().construct_mapping(node, deep=deep)
        located = _Mapping(out)
        located.source, located.lines = self.source, seen
        return located

    def construct_located_map(self, node):
        data = _Mapping()
        yield data
        value = self.construct_mapping(node)
        data.update(value)
        data.source, data.lines = value.source, value.lines


_YamlLoader.add_constructor("tag:yaml.org,2002:map", _YamlLoader.construct_located_map)
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
    """YAML text -> Python value with the config loader (the project's one YAML reader); a syntax error or
    duplicate key raises ConfigError naming `source` and the line. Mappings remember `source` and their lines."""
    loader = _YamlLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from None
    finally:
        loader.dispose()


def read_config_file(path: str | os.PathLike) -> list[dict]:
    """The mappings of a config file and of the files it inherits (`base:`), the farthest base first, each
    without its `base` key. A missing file, a cycle or a bad `base` value raises ConfigError naming the files."""
    layers: list[dict] = []

    def visit(file: Path, chain: list[Path]) -> None:
        key = file.resolve()
        if key in chain:
            cycle = " -> ".join(str(p) for p in [*chain[chain.index(key):], key])
            raise ConfigError(f"config inheritance cycle: {cycle}")
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}" + (f" (the base of {chain[-1]})" if chain else ""))
        data = parse_yaml(file.read_text(encoding="utf-8"), str(file))
        data = _Mapping() if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: top level must be a mapping")
        where = _where(data, "base")
        bases = data.pop("base", None)
        bases = [bases] if isinstance(bases, str) else bases
        if bases is not None and not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
            raise ConfigError(f"{where}base: expected a config file name or a list of them (relative to {file.parent})")
        for base in bases or []:
            visit(Path(os.path.normpath(file.parent / base)), [*chain, key])
        layers.append(data)

    visit(Path(path), [])
    return layers


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


def _renamed(path: str, value: dict) -> dict:
    """A section's settings with old names mapped to new ones (RENAMED) and refused ones named (REFUSED)."""
    for key in value:
        if f"{path}.{key}" in REFUSED:
            raise ConfigError(f"{_where(value, key)}{path}.{key} was renamed: write {REFUSED[f'{path}.{key}']}")
    renames = RENAMED.get(path, {})
    if not any(old in value for old in renames):
        return value
    out = _Mapping()
    out.source, out.lines = getattr(value, "source", ""), dict(getattr(value, "lines", {}))
    for key, v in value.items():
        new = renames.get(key, key)
        if new != key and new in value:
            raise ConfigError(f"{_where(value, key)}{path}.{key} is the old name of {path}.{new}; give only {new}")
        out[new] = v
        if key in out.lines:
            out.lines[new] = out.lines[key]
    return out


def _merge(obj: Any, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        where = _where(updates, key)
        if key not in names:
            raise ConfigError(f"{where}unknown config key {path!r}; valid keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{path}: expected a mapping of settings, got {value!r}")
            _merge(current, value, path + ".")
        elif isinstance(current, dict) and isinstance(value, dict):
            value = _renamed(path, value)
            # Settings of a named kind (prox, mask, scheduler) merge into the current ones, unless the kind
            # changes: then the old kind's settings would not apply, so start afresh.
            if "name" in current and "name" in value and value["name"] != current["name"]:
                setattr(obj, key, _plain(value))
            else:
                merged = copy.deepcopy(current)
                merged.update(_plain(value))
                setattr(obj, key, merged)
        else:
            try:
                value = _renamed(path, value) if isinstance(value, dict) else value
                setattr(obj, key, _check_type(path, _plain(value), hints[key]))
            except ConfigError as e:
                raise ConfigError(f"{where}{e}") from None


def _plain(value: Any) -> Any:
    """A value with the loader's located mappings turned back into plain dicts (what the config keeps)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


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
    # A limit is a fraction of the batches (<= 1) or a whole number of batches (> 1), as in Lightning.
    _require("train.limit_train_batches", t.limit_train_batches, math.isfinite(t.limit_train_batches)
             and t.limit_train_batches > 0 and (t.limit_train_batches <= 1 or t.limit_train_batches.is_integer()),
             "a fraction of the batches in (0, 1] or a whole number of batches")
    _require("train.limit_val_batches", t.limit_val_batches, math.isfinite(t.limit_val_batches)
             and t.limit_val_batches >= 0 and (t.limit_val_batches <= 1 or t.limit_val_batches.is_integer()),
             "a fraction of the batches in [0, 1] or a whole number of batches")
    _require("train.seed", t.seed, 0 <= t.seed < 2**32, "an integer in [0, 2**32) (numpy's seed range)")
    _require("data.num_workers", d.num_workers, d.num_workers >= 0, ">= 0")
    _require("model.lam_init", m.lam_init, math.isfinite(m.lam_init) and m.lam_init > 0, "a finite number > 0")
    for key in ("step_size_init", "step_size_max"):
        value = getattr(m, key)
        _require(f"model.{key}", value, value is None or (math.isfinite(value) and value > 0),
                 "a finite number > 0 (or null for the default)")
    for key in ("channels", "num_blocks"):
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
    """data.mask.bank / bank_cache: Poisson-disc training masks from a bank (mrirecon.data.masks.poisson)."""
    for key in ("bank", "bank_cache"):
        if key in mask and mask.get("name") != "poisson":
            raise ConfigError(f"data.mask.{key}: only poisson masks have a mask bank (the other types cost "
                              f"microseconds to draw), got name {mask.get('name')!r}; remove data.mask.{key}")
    if "bank" in mask:
        bank = mask["bank"]
        _require("data.mask.bank", bank, isinstance(bank, int) and not isinstance(bank, bool) and bank >= 0,
                 "an integer >= 0 (training masks per setting; 0 = draw every training mask afresh)")
    if "bank_cache" in mask:
        folder = mask["bank_cache"]
        _require("data.mask.bank_cache", folder, folder is None or isinstance(folder, str),
                 "a folder or null (default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks)")


# Deep checks of a section, registered by the code that owns it (a registry checks its own options), so
# that this module stays schema and YAML only and imports nothing of the models or data.
SectionCheck = Callable[[Config], None]
_SECTION_CHECKS: dict[str, SectionCheck] = {}


def register_section_check(key: str, check: SectionCheck) -> None:
    """Run `check(cfg)` on every validated config (after the schema checks): it may normalise its section in
    place (e.g. map old option names) and raises ConfigError, or ValueError which is reported under `key`.
    A check must not build anything costly: it runs on every config load."""
    _SECTION_CHECKS[key] = check


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
    if not isinstance(cfg.model.prox.get("name"), str):
        raise ConfigError("model.prox.name: missing (e.g. resnet or unet)")
    if not isinstance(cfg.data.mask.get("name"), str):
        raise ConfigError("data.mask.name: missing (random, equispaced, equispaced_fraction, poisson, kyt, cmrxrecon)")
    if cfg.train.scheduler is not None and not isinstance(cfg.train.scheduler.get("name"), str):
        raise ConfigError("train.scheduler.name: missing (step or cosine)")
    _check_ranges(cfg)
    for key, check in _SECTION_CHECKS.items():
        try:
            check(cfg)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{key}: {e}") from None
    t = cfg.train
    # train.strategy and train.num_modules are checked by the strategy registry (training/strategies/base.py).
    if t.strategy == "gleam_pipeline" and None not in (t.pipeline.stages, t.num_modules) and t.pipeline.stages > t.num_modules:
        raise ConfigError(f"train.pipeline.stages: {t.pipeline.stages} stages for {t.num_modules} GLEAM modules; "
                          "every stage needs at least one module")
    if t.strategy == "gleam_pipeline" and None not in (t.pipeline.stages, t.num_modules) and t.num_modules % t.pipeline.stages:
        raise ConfigError(f"train.pipeline.stages: {t.pipeline.stages} does not divide "
                          f"train.num_modules={t.num_modules}")
    return cfg


def config_from_layers(layers: list[dict], overrides: list[str] | tuple[str, ...] = (),
                       base: dict | None = None) -> Config:
    """Defaults <- `base` (e.g. a checkpoint's config) <- `layers` in order (`read_config_file`) <- dotted
    overrides, then validated."""
    cfg = Config()
    if base is not None:
        _merge(cfg, base)
    for layer in layers:
        _merge(cfg, layer)
    for text in overrides:
        keys, value = _parse_override(text)
        _merge(cfg, _nest(keys, value))
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> Config:
    """Defaults <- `base` (e.g. a checkpoint's config) <- YAML file (after the files it inherits) <- dotted
    overrides, then validated."""
    return config_from_layers([] if path is None else read_config_file(path), overrides, base)


def from_dict(data: dict) -> Config:
    cfg = Config()
    _merge(cfg, data)
    return validate(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    from .atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
