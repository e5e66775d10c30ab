"""Build the dataset of one folder as an experiment config describes it: the one place that turns
`cfg.data` into a ReconDataset (training's DataModule, evaluation and tuning all call it)."""
from __future__ import annotations

import os

from ..config import Config
from .datasets import ReconDataset
from .errors import DataError
from .kinds import folder_kinds
from .masks import MaskFunc, build_mask_func
from .transforms import BatchTransform, ReconTransform


def check_folder_kind(folder: str | os.PathLike, kind: str, expected_by: str = "data.kind") -> None:
    """DataError when `folder` holds another kind's data (e.g. a cine folder given to a 2D checkpoint), naming the
    kind the folder holds and the one `expected_by` (the config, a checkpoint) expects."""
    held = folder_kinds(folder)
    if held and kind not in held:
        raise DataError(folder, f"holds {' / '.join(held)} data, but {expected_by} expects {kind} data")


def batch_transform(cfg: Config) -> BatchTransform:
    """The device part of `cfg.data`'s transform (readout crop, online maps, target, zero-filled scaling), which
    training, validation, evaluation and the pipeline apply to every batch their loaders hand over."""
    d = cfg.data
    return BatchTransform(d.target, d.maps, {**d.espirit, "num_maps": cfg.model.num_maps})


def build_dataset(cfg: Config, folder: str | os.PathLike, progress: bool = True, *, deterministic: bool = True,
                  sample_rate: float = 1.0, mask_func: MaskFunc | None = None, references: bool = False,
                  expected_by: str = "data.kind") -> ReconDataset:
    """The dataset of `folder` with `cfg.data`'s kind, mask (`mask_func`, default built from the config),
    coil maps and reference. deterministic: one fixed mask per file (seeded from its name: validation and
    evaluation); otherwise a fresh mask per epoch (training). sample_rate: fraction of the files used.
    references: every item needs a fully sampled reference (training and validation splits). expected_by: who
    expects cfg's data kind, named when the folder holds another kind (e.g. "the checkpoint")."""
    from .coil_maps import cache_for

    d, num_maps = cfg.data, cfg.model.num_maps
    check_folder_kind(folder, d.kind, expected_by)
    mask_func = build_mask_func(d.mask) if mask_func is None else mask_func
    prepare = batch_transform(cfg)
    transform = ReconTransform(mask_func, deterministic=deterministic, seed=cfg.train.seed, maps=prepare.maps,
                               espirit=prepare.espirit, target=prepare.target)
    return ReconDataset(folder, d.kind, transform=transform, volume=d.volume, acquisitions=d.acquisitions,
                        crop_readout=d.crop_readout, sample_rate=sample_rate, require_maps=d.maps == "file",
                        num_maps=num_maps, scan_values=d.scan_values, progress=progress,
                        maps_cache=cache_for(d, num_maps), maps_workers=max(1, d.num_workers),
                        references=references, mask_func=mask_func)
