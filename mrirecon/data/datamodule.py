"""LightningDataModule: train/val/test datasets of one kind, with deterministic masks.

Training masks and shuffling depend only on (seed, epoch, file, slice), so a seed reproduces a
run for any number of workers, and a run resumed from a checkpoint sees the same data as an
uninterrupted one. Validation/test masks are fixed per file (seeded from the file's base name).

Mixed shapes: real folders hold files of different matrix sizes and coil counts (fastMRI's do). Every batch
holds items of one shape (`ShapeBatchSampler`: bucketing by shape), so `batch_size > 1` never stacks tensors
of different sizes and no padding touches the physics. A folder of one shape gets exactly the batches of
plain batching (the epoch's permutation, cut into batch_size pieces); with several shapes, the permutation is
walked in order and each item joins the open batch of its shape, a batch leaving when full (the last batch
of a shape may be smaller).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import Config
from .build import batch_transform, build_dataset
from .datasets import ReconDataset
from .errors import DataError
from .masks import build_mask_func
from .transforms import EpochTagged  # the loaders' dataset: items as the workers hand them over

SPLITS_WITH_REFERENCES = ("train", "val")  # every item of these splits needs a fully sampled reference


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


def shape_batches(order: Iterable[int], shape_of: Callable[[int], Hashable], batch_size: int) -> list[list[int]]:
    """Cut `order` (item indices) into batches of at most `batch_size` items of one shape (`shape_of(i)`): each
    item joins the open batch of its shape, which is emitted when full; partial batches follow, in the order
    their first item came. With one shape this is plain batching of `order`."""
    open_batches: dict[Hashable, list[int]] = {}
    batches: list[list[int]] = []
    for i in order:
        key = shape_of(i)
        batch = open_batches.setdefault(key, [])
        batch.append(i)
        if len(batch) == batch_size:
            batches.append(batch)
            del open_batches[key]
    return batches + list(open_batches.values())


class ShapeBatchSampler(Sampler[list[int]]):
    """Batches of one shape (see the module docstring) over an `EpochSampler`'s order, its epoch tags kept
    (Lightning's `set_epoch` reaches the EpochSampler as `batch_sampler.sampler`). `start` = (epoch, batches):
    a run resumed mid-epoch leaves out that epoch's first batches."""

    def __init__(self, sampler: EpochSampler, shapes: Sequence[Hashable], batch_size: int):
        self.sampler, self.shapes, self.batch_size = sampler, list(shapes), batch_size
        self.start = (0, 0)

    def _batches(self) -> list[list[int]]:
        n = self.sampler.n
        return shape_batches(self.sampler, lambda tagged: self.shapes[tagged % n], self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch's order is drawn at the first batch, after Lightning's set_epoch (a DataLoader
        # iterator is made before it, e.g. when a run resumes).
        batches = self._batches()
        if self.start[0] == self.sampler.epoch:
            batches = batches[self.start[1]:]
        yield from batches

    def __len__(self) -> int:
        return len(self._batches())


class ReconDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.mask_func = build_mask_func(cfg.data.mask)
        self._datasets: dict[str, ReconDataset] = {}
        self.resume_at = (0, 0)  # (epoch, batches already trained): set by the trainer when it resumes mid-epoch
        self.batch_transform = batch_transform(cfg)

    def split_dir(self, split: str) -> Path:
        path = Path(self.cfg.data.root) / split
        if not path.is_dir():
            raise DataError(path, f"missing {split} split folder under data.root "
                            f"(generate data with `mrirecon synth --kind {self.cfg.data.kind} "
                            f"--out {self.cfg.data.root}`)")
        return path

    def dataset(self, split: str, root: str | Path | None = None) -> ReconDataset:
        key = f"{split}:{root}"
        if key not in self._datasets:
            self._datasets[key] = build_dataset(self.cfg, root or self.split_dir(split), deterministic=split != "train",
                                                sample_rate=self.cfg.data.sample_rate, mask_func=self.mask_func,
                                                references=split in SPLITS_WITH_REFERENCES)
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")

    def _loader(self, dataset, batch_sampler) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.cfg.data.num_workers,
                          persistent_workers=False)

    def data_parallel_shard(self) -> tuple[int, int]:
        """(replicas, this process's replica) that share each epoch: Lightning's DDP world, else (1, 0). A
        pipeline stage overrides it (replica d of every stage reads shard d)."""
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        replicas, rank = self.data_parallel_shard()  # this process's shard of every epoch
        sampler = EpochSampler(len(ds), self.cfg.train.seed, replicas=replicas, rank=rank)
        batches = ShapeBatchSampler(sampler, [ds.item_shape(i) for i in range(len(ds))], self.cfg.data.batch_size)
        batches.start = self.resume_at
        return self._loader(EpochTagged(ds, ds.transform), batches)

    def _fixed_loader(self, split: str) -> DataLoader:
        """Validation and test: items in order, batched by shape (no epoch tags: masks are fixed per file)."""
        ds = self.dataset(split)
        return self._loader(EpochTagged(ds, ds.transform), shape_batches(range(len(ds)), ds.item_shape,
                                                                         self.cfg.data.batch_size))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning's hook, on the training device: the loaders' batches through the one batch transform."""
        return self.batch_transform(batch)

    def val_dataloader(self) -> DataLoader:
        return self._fixed_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._fixed_loader("test")
