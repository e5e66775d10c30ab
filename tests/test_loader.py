"""The lean loader: DataLoader workers only read and mask; the one batch transform does the rest on the device."""
import h5py
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from mrirecon.config import load_config
from mrirecon.data.build import batch_transform, build_dataset
from mrirecon.data.errors import DataError
from mrirecon.data.masks import build_mask_func
from mrirecon.data.transforms import BatchTransform, EpochTagged, LoadedSample, ReconSample
from mrirecon.physics import SenseOp, fftc, ifftc

MASK = "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}"


def config(root, tmp_path, *extra):
    return load_config("configs/knee2d.yaml", [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", MASK,
                                               "model.num_unrolls=2", "model.prox.channels=8", *extra])


def reference(loaded: LoadedSample, i: int, target: str) -> dict[str, torch.Tensor]:
    """Sample i of a worker batch, transformed the straightforward way, one sample at a time."""
    k = loaded.kspace[i]
    h, crop = k.shape[-2], int(loaded.readout_crop[i])
    start = (h - crop) // 2
    full = fftc(ifftc(k, ndim=[-2])[..., start:start + crop, :], ndim=[-2])  # readout crop in image space
    mask, maps = loaded.mask[i], loaded.maps[i]
    under = full * mask + 0.0
    coils = ifftc(full, ndim=2)
    sense = (maps.conj() * coils[None]).sum(1)
    if target == "rss":  # SENSE phase, RSS magnitude; RSS alone in map 0 where the SENSE image vanishes
        rss = (coils.real**2 + coils.imag**2).sum(0).sqrt()
        norm = (sense.real**2 + sense.imag**2).sum(0).sqrt()
        inside = norm > float(norm.max()) * 1e-12
        sense = torch.where(inside, sense * (rss / torch.where(inside, norm, 1)), 0)
        sense[0] = torch.where(inside, sense[0], rss.to(sense.dtype))
    zero_filled = SenseOp(maps[None], mask[None], 2).H(under[None])[0]
    scale = float(zero_filled.abs().max())
    return {"kspace": under / scale, "target": sense / scale, "scale": torch.tensor(scale, dtype=torch.float64)}


@pytest.mark.parametrize("target", ["rss", "sense"])
def test_batch_transform_gives_each_sample_what_the_per_sample_computation_gives(synthetic, tmp_path, target):
    cfg = config(synthetic("knee2d"), tmp_path, f"data.target={target}")
    ds = build_dataset(cfg, synthetic("knee2d") / "train", progress=False, deterministic=False)
    loaded = next(iter(DataLoader(EpochTagged(ds, ds.transform), batch_size=2)))
    out = batch_transform(cfg)(loaded)
    assert isinstance(out, ReconSample) and out.kspace.shape == (2, 4, 32, 32)
    for i in range(2):
        want = reference(loaded, i, target)
        assert torch.equal(out.kspace[i], want["kspace"])   # bit for bit: the numbers training gets are unchanged
        assert torch.equal(out.target[i], want["target"])
        assert torch.equal(out.scale[i], want["scale"])
        assert torch.equal(out.maps[i], loaded.maps[i]) and torch.equal(out.mask[i], loaded.mask[i])
    single = ds[1]  # ReconDataset[i]: the same transform on a batch of one
    assert torch.equal(single.kspace, reference(default_collate([EpochTagged(ds, ds.transform)[1]]), 0, target)["kspace"])


def test_worker_hands_over_the_slice_as_stored_and_maps_at_the_recon_readout(synthetic, tmp_path):
    cfg = config(synthetic("knee2d"), tmp_path)
    ds = build_dataset(cfg, synthetic("knee2d") / "train", progress=False)
    item = EpochTagged(ds, ds.transform)[1]
    fi, s = ds.files[ds.items[1][0]], ds.items[1][1]
    with h5py.File(fi.path) as f:
        kspace, maps = f["kspace"][s], f["espirit_maps"][s]
    assert isinstance(item, LoadedSample) and item.readout_crop == 32
    assert torch.equal(item.kspace, torch.from_numpy(kspace))  # readout 64, not cropped, not masked: no FFT ran
    assert torch.equal(item.maps, torch.from_numpy(maps[..., 16:48, :]))  # only the rows the recon uses
    assert item.mask.shape[-1] == 32 and set(item.mask.unique().tolist()) == {0.0, 1.0}
    assert item.reference and item.fname == fi.path.name and item.slice_num == s


def test_a_batch_mixing_readout_crops_is_refused_naming_the_files():
    def item(name, crop):
        return LoadedSample(torch.ones(2, 8, 4, dtype=torch.complex64), torch.ones(1, 1, 4), torch.empty(0), crop, True,
                            1.0, 1.0, name, 0, 2)

    with pytest.raises(DataError, match=r"a\.h5.*mixes readout crop \[4, 6\].*b\.h5"):
        BatchTransform(maps="online")(default_collate([item("a.h5", 4), item("b.h5", 6)]))


def test_nan_kspace_is_found_by_the_batch_transform_naming_the_file():
    k = torch.ones(2, 2, 4, 4, dtype=torch.complex64)
    k[1, 0, 1, 1] = float("nan")
    batch = LoadedSample(k, torch.ones(2, 1, 1, 4), torch.ones(2, 1, 2, 4, 4, dtype=torch.complex64),
                         torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.bool), torch.ones(2),
                         torch.ones(2), ["a.h5", "b.h5"], torch.tensor([0, 7]), torch.full((2,), 2))
    with pytest.raises(DataError, match=r"b\.h5 \[kspace\]: NaN or Inf in k-space \(slice 7\)"):
        BatchTransform()(batch)


def test_training_validation_and_evaluation_all_go_through_the_one_batch_transform(synthetic, tmp_path,
                                                                                   monkeypatch):
    from mrirecon.evaluation.runner import evaluate
    from mrirecon.training.module import ReconModule
    from mrirecon.training.run import train

    made, seen = [], []
    transform = BatchTransform.__call__

    def counted(self, batch, device=None):
        assert isinstance(batch, LoadedSample)  # what the loaders hand over
        out = transform(self, batch, device)
        made.append(out.kspace)
        return out

    def spy(name):
        original = getattr(ReconModule, name)

        def step(self, batch, *args, **kwargs):
            seen.append((name, any(batch.kspace is k for k in made)))
            return original(self, batch, *args, **kwargs)
        return step

    def forward(self, kspace, *args, **kwargs):
        seen.append(("evaluate", any(kspace is k for k in made)))
        return self.net(kspace, *args, **kwargs)

    monkeypatch.setattr(BatchTransform, "__call__", counted)
    monkeypatch.setattr(ReconModule, "training_step", spy("training_step"))
    monkeypatch.setattr(ReconModule, "validation_step", spy("validation_step"))
    monkeypatch.setattr(ReconModule, "forward", forward)
    cfg = config(synthetic("knee2d"), tmp_path, "train.max_epochs=1", "train.limit_train_batches=1",
                 "train.limit_val_batches=1", "data.batch_size=2")
    result = train(cfg, enable_progress_bar=False)
    from mrirecon.training.module import load_module

    evaluate(cfg, synthetic("knee2d") / "test", tmp_path / "eval", module=load_module(result.best_checkpoint),
             num_figures=0, progress=False)
    assert {name for name, _ in seen} == {"training_step", "validation_step", "evaluate"}
    assert all(ok for _, ok in seen)  # every batch a step or the evaluation used came out of BatchTransform
