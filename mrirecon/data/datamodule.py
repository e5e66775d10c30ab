"""LightningDataModule: train/val/test datasets of one kind, with deterministic masks.

Training masks and shuffling depend only on (seed, epoch, file, slice), so a seed reproduces a
run for any number of workers, and a run resumed from a checkpoint sees the same data as an
uninterrupted one. Validation/test masks are fixed per file (seeded from the file's base name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from .datasets import ReconDataset
from .errors import DataError
from .subsample import build_mask_func
from .transforms import ReconTransform


class EpochSampler(Sampler[int]):
    """Shuffles with a permutation seeded by (seed, epoch) and tags each index with the epoch
    (index + epoch * n), so the dataset can seed that epoch's masks without shared state.

    Data parallel (`replicas` > 1, Lightning's DDP): replica r takes items r, r + R, ... of the epoch's
    permutation, which is padded by its own first items to a multiple of R so every replica takes as many
    steps (as torch's DistributedSampler does). The shards change every epoch with the permutation."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, replicas: int = 1, rank: int = 0):
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} out of range for {replicas} replicas")
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.replicas, self.rank = replicas, rank

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at the start of every epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        if self.replicas > 1:
            order = (order + order[:len(self) * self.replicas - self.n])[self.rank::self.replicas]
        return (i + self.epoch * self.n for i in order)

    def __len__(self) -> int:
        return -(-self.n // self.replicas)


class EpochTagged(Dataset):
    """Decodes EpochSampler's tagged indices: item i of epoch e uses that epoch's mask seed."""

    def __init__(self, dataset: ReconDataset, transform: ReconTransform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: int):
        epoch, index = divmod(tagged, len(self.dataset))
        return self.transform(self.dataset.read(index), epoch=epoch)


class ReconDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.mask_func = build_mask_func(cfg.data.mask)
        self._datasets: dict[str, ReconDataset] = {}

    def split_dir(self, split: str) -> Path:
        path = Path(self.cfg.data.root) / split
        if not path.is_dir():
            raise DataError(path, f"missing {split} split folder under data.root "
                            f"(generate data with `python -m mrirecon.synthetic --kind {self.cfg.data.kind} "
                            f"--out {self.cfg.data.root}`)")
        return path

    def dataset(self, split: str, root: str | Path | None = None) -> ReconDataset:
        key = f"{split}:{root}"
        if key not in self._datasets:
            d = self.cfg.data
            from .coil_maps import cache_for

            transform = ReconTransform(self.mask_func, deterministic=split != "train", seed=self.cfg.train.seed,
                                       maps=d.maps, espirit={**d.espirit, "num_maps": self.cfg.model.num_maps},
                                       target=d.target)
            self._datasets[key] = ReconDataset(
                root or self.split_dir(split), d.kind, transform=transform, volume=d.volume,
                acquisitions=d.acquisitions, crop_readout=d.crop_readout, sample_rate=d.sample_rate,
                require_maps=d.maps == "file", num_maps=self.cfg.model.num_maps, scan_values=d.scan_values,
                maps_cache=cache_for(d, self.cfg.model.num_maps), maps_workers=max(1, d.num_workers))
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")

    def _loader(self, dataset, sampler=None, shuffle=False) -> DataLoader:
        d = self.cfg.data
        return DataLoader(dataset, batch_size=d.batch_size, sampler=sampler, shuffle=shuffle,
                          num_workers=d.num_workers, persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        trainer = getattr(self, "trainer", None)  # Lightning's DDP: this process's shard of every epoch
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(len(ds), self.cfg.train.seed, replicas=replicas, rank=rank)
        return self._loader(EpochTagged(ds, ds.transform), sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))
