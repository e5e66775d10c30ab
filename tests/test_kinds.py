"""Data kinds are one table (mrirecon/data/kinds.py): a kind registered outside the package, with its own reader
of its own file layout, geometry, evaluation crop and default mask, trains through the normal training entry and
is evaluated, without a line of the package naming it (issue 17, item 3)."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.config import ConfigError, load_config
from mrirecon.data.errors import DataError
from mrirecon.data.kinds import DataKind, Geometry, folder_kinds, get_kind, register_kind, registered_kinds
from mrirecon.data.readers.base import RawSlice, ReadOptions, Reader
from mrirecon.physics import fftc

# ---------------------------------------------------------------------------------------------------
# A toy layout: single-coil 2D images, one .npy file per volume holding (slices, H, W) complex64 images.


@dataclass
class ToyFile:
    path: Path
    shape: tuple[int, int, int]
    recon_size: tuple[int, int] | None = None

    @property
    def num_slices(self) -> int:
        return self.shape[0]


class ToyReader(Reader):
    """k-space is the centred FFT of each stored image; the single coil's sensitivity is 1 everywhere."""

    def __init__(self, root, kind, options: ReadOptions):
        super().__init__(root, kind, options)
        paths = sorted(self.root.glob("*.npy"))
        if not paths:
            raise DataError(self.root, "no .npy images")
        self.files = [ToyFile(p, tuple(np.load(p, mmap_mode="r").shape)) for p in paths]
        self.items = [(i, s) for i, f in enumerate(self.files) for s in range(f.num_slices)]

    @classmethod
    def recognises(cls, root, kind) -> bool:
        return any(Path(root).glob("*.npy"))

    def read(self, index: int) -> RawSlice:
        i, s = self.items[index]
        f = self.files[i]
        image = torch.from_numpy(np.array(np.load(f.path, mmap_mode="r")[s]))
        kspace = fftc(image[None], ndim=2).numpy()              # (C=1, H, W)
        maps = np.ones((1, 1, *image.shape), np.complex64)    # (M=1, C=1, H, W)
        return RawSlice(kspace, maps, None, f.path.name, s, None, self.fft_ndim)

    def item_shape(self, index: int) -> tuple:
        return (1, *self.files[self.items[index][0]].shape[1:])


TOY_MASK = {"name": "equispaced", "center_fractions": [0.25], "accelerations": [2]}
TOY = DataKind("toy2d", ToyReader, Geometry(fft_ndim=2, conv_dims=2), eval_crop=True, default_mask=TOY_MASK,
               maps=("file",))
if TOY.name not in registered_kinds():
    register_kind(TOY)


def _toy_folder(root: Path, volumes=(3, 1, 1), slices=2, size=16) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size] / size - 0.5
    index = 0
    for split, count in zip(("train", "val", "test"), volumes):
        (root / split).mkdir(parents=True)
        for _ in range(count):
            images = []
            for _ in range(slices):  # a smooth blob with a random centre, radius and phase
                cy, cx, r = rng.uniform(-0.15, 0.15, 2).tolist() + [rng.uniform(0.2, 0.35)]
                blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)
                images.append(blob * np.exp(1j * rng.uniform(-np.pi, np.pi)))
            np.save(root / split / f"toy_{index:03d}.npy", np.stack(images).astype(np.complex64))
            index += 1
    return root


def _toy_config(root: Path, tmp_path: Path, *extra):
    return load_config(None, ["data.kind=toy2d", f"data.root={root}", f"output_dir={tmp_path / 'runs'}",
                              "data.batch_size=2", "train.max_epochs=1", "model.num_unrolls=2",
                              "model.prox.channels=8", *extra])


def test_registered_kind_is_read_by_config_validation():
    assert get_kind("toy2d") is TOY and registered_kinds()[:4] == ["knee2d", "brain2d", "knee3d", "cine"]
    with pytest.raises(ConfigError, match=r"data.kind: 'toy3d' is not one of \['knee2d', 'brain2d', 'knee3d', "
                                          r"'cine', 'toy2d'"):
        load_config(None, ["data.kind=toy3d"])
    with pytest.raises(ConfigError, match=r"data.volume: data kind 'toy2d' has no whole volumes \(only \['knee3d'\]\)"):
        load_config(None, ["data.kind=toy2d", "data.volume=true"])
    with pytest.raises(ConfigError, match=r"data.maps: 'online' is not supported by data kind 'toy2d' \(supported: "
                                          r"\['file'\]\)"):
        load_config(None, ["data.kind=toy2d", "data.maps=online"])


def test_a_config_naming_no_mask_gets_the_kinds_default_mask(tmp_path):
    assert _toy_config(tmp_path, tmp_path).data.mask == TOY_MASK
    named = {"name": "random", "center_fractions": [0.25], "accelerations": [3]}
    assert _toy_config(tmp_path, tmp_path, f"data.mask={named}").data.mask == named


def test_a_folder_of_the_toy_layout_is_recognised_as_toy2d_only(tmp_path):
    root = _toy_folder(tmp_path / "toy")
    assert folder_kinds(root / "train") == ["toy2d"]


def test_toy_kind_trains_and_evaluates_through_the_normal_entries(tmp_path):
    import h5py

    from mrirecon.evaluation.runner import evaluate
    from mrirecon.training.module import load_module
    from mrirecon.training.run import train

    root = _toy_folder(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path)
    run = train(cfg, enable_progress_bar=False)
    assert run.best_checkpoint and np.isfinite(run.best_score)
    module = load_module(run.best_checkpoint)
    result = evaluate(module.cfg, root / "test", tmp_path / "eval", module=module, num_figures=0, progress=False,
                      extra={"checkpoint": run.best_checkpoint})
    assert result["num_volumes"] == 1 and np.isfinite(result["psnr"]["mean"])
    with h5py.File(tmp_path / "eval" / "toy_004.npy", "r") as f:  # the prediction of the one test volume
        assert f["reconstruction"].shape == (2, 16, 16)
