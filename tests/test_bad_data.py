"""Bad data is named before any training step: the file, key or patient, and what is wrong (issue 17, item 4).

Each test damages a tiny synthetic folder the way a careless user's folder is damaged and checks the exact
message of the `DataError` raised when the dataset is built; mixed matrix sizes and coil counts train with
batch_size > 1 (batches of one shape)."""
import shutil
from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from mrirecon.config import load_config
from mrirecon.data.build import build_dataset
from mrirecon.data.datamodule import EpochSampler, ReconDataModule, ShapeBatchSampler, shape_batches
from mrirecon.data.datasets import ReconDataset
from mrirecon.data.errors import DataError
from mrirecon.data.masks import build_mask_func
from mrirecon.data.readers import cmrxrecon as cx
from mrirecon.data.transforms import ReconTransform
from mrirecon.synthetic.generator import make_volume

TINY_NET = ["model.num_unrolls=2", "model.prox.channels=8"]


def _test_like_file(synthetic, tmp_path, mask: np.ndarray) -> tuple:
    """A copy of one knee2d file made like a fastMRI test file: a stored `mask`, no reference."""
    folder = tmp_path / "test"
    folder.mkdir()
    path = folder / "knee2d_000.h5"
    shutil.copy(sorted((synthetic("knee2d") / "test").glob("*.h5"))[0], path)
    with h5py.File(path, "r+") as f:
        del f["reconstruction_rss"]
        f["mask"] = mask
        width = f["kspace"].shape[-1]
    return folder, path, width


def _fastmri_dataset(folder):
    transform = ReconTransform(build_mask_func({"name": "random", "center_fractions": [0.125], "accelerations": [4]}),
                               deterministic=True)
    return ReconDataset(folder, "knee2d", transform=transform)


def test_fastmri_test_file_whose_mask_has_the_wrong_length_is_named(synthetic, tmp_path):
    mask = np.ones(35, bool)  # the k-space is 32 columns wide
    folder, path, width = _test_like_file(synthetic, tmp_path, mask)
    assert width == 32
    with pytest.raises(DataError, match=rf"{path.name} \[mask\]: mask has shape \(35,\) but the k-space is 32 "
                                        r"phase-encode columns wide"):
        _fastmri_dataset(folder)


@pytest.mark.parametrize("bad,shown", [(0.5, "0.5"), (2.0, "2.0"), (-1.0, "-1.0")])
def test_mask_values_other_than_0_and_1_are_refused(synthetic, tmp_path, bad, shown):
    mask = np.zeros(32, np.float32)
    mask[12:20] = 1
    mask[3] = bad
    folder, path, _ = _test_like_file(synthetic, tmp_path, mask)
    with pytest.raises(DataError, match=rf"{path.name} \[mask\]: mask values must be 0/1 or boolean; found 1 other "
                                        rf"value\(s\), e\.g\. \[{shown}\]"):
        _fastmri_dataset(folder)


@pytest.mark.parametrize("dtype", [bool, np.float32, np.uint8])
def test_boolean_and_0_1_masks_are_read(synthetic, tmp_path, dtype):
    mask = np.zeros(32, dtype)
    mask[12:20] = 1
    folder, path, _ = _test_like_file(synthetic, tmp_path, mask)
    sample = _fastmri_dataset(folder)[0]
    assert sample.target.numel() == 0  # no reference: reconstructed, not scored
    assert torch.equal(sample.mask.flatten() > 0, torch.from_numpy(mask > 0))


def test_cmrxrecon_mask_with_values_other_than_0_and_1_is_named(tmp_path):
    base = tmp_path / "TrainingSet"
    data = np.ones((1, 5, 4, 24, 32), np.complex64)
    cx.write_patient(base, "P001", data, accelerations=[8])
    mask_file = base / "AccFactor08" / "P001" / "cine_sax_mask.mat"
    with h5py.File(mask_file, "r") as f:
        weights = f["mask08"][()] * 0.5  # a density-compensation weight saved by mistake
    cx.write_mat73(mask_file, {"mask08": weights})
    with pytest.raises(DataError, match=r"cine_sax_mask\.mat \[mask08\]: mask values must be 0/1 or boolean"):
        cx.discover(base)


@pytest.fixture(scope="module")
def cmx(tmp_path_factory):
    """A CMRxRecon TrainingSet of 3 synthetic patients (P001 to P003, FullSample and AccFactor08)."""
    base = tmp_path_factory.mktemp("cmrxrecon") / "TrainingSet"
    for i in range(3):
        data, _ = make_volume("cine", i, 0, coils=4, slices=1, frames=5, size=(24, 32))
        cx.write_patient(base, f"P{i + 1:03d}", data["kspace"], accelerations=[8])
    return base


def _cine_cfg(root, *extra):
    return load_config("configs/cine_cmrxrecon.yaml", [f"data.root={root}", *extra])


def test_cmrxrecon_patient_without_fullsample_is_named_in_training_splits(cmx, tmp_path):
    base = tmp_path / "TrainingSet"
    shutil.copytree(cmx, base)
    shutil.rmtree(base / "FullSample" / "P002")
    cfg = _cine_cfg(tmp_path)
    with pytest.raises(DataError, match=r"P002/cine_sax\.mat \[kspace_full\]: patient P002: no FullSample/P002/"
                                        r"cine_sax\.mat, only undersampled data in AccFactor\d\d"):
        build_dataset(cfg, base, references=True)
    # the same folder as a test split: P002 is reconstructed from its acquired data, without a reference
    ds = build_dataset(cfg, base, references=False)
    assert {cf.patient for cf in ds.files if not cf.fully_sampled} == {"P002"}


def test_dangling_split_link_names_the_patient(cmx, tmp_path):
    training = tmp_path / "TrainingSet"
    shutil.copytree(cmx, training)
    out = tmp_path / "split"
    splits = cx.split_training_set(training, out, (0.34, 0.34))
    moved = splits["train"][0]
    shutil.rmtree(training / "FullSample" / moved)  # the TrainingSet changed after the split was made
    with pytest.raises(DataError, match=rf"FullSample/{moved}: patient {moved}: dangling link to "):
        build_dataset(_cine_cfg(out), out / "train", references=True)


@pytest.mark.parametrize("layout", ["hdf5", "cmrxrecon"])
def test_cine_folder_given_to_a_2d_checkpoint_names_both_kinds(synthetic, cmx, tmp_path, layout):
    from mrirecon.evaluation.runner import evaluate

    folder = synthetic("cine") / "test" if layout == "hdf5" else cmx
    cfg = load_config("configs/knee2d.yaml", [f"output_dir={tmp_path / 'runs'}", *TINY_NET])
    with pytest.raises(DataError, match=rf"{folder}: holds cine data, but the checkpoint run/best\.ckpt expects "
                                        r"knee2d data"):
        evaluate(cfg, folder, tmp_path / "out", extra={"checkpoint": "run/best.ckpt"}, progress=False)


def test_shape_batches_hold_one_shape_and_every_item_once():
    shapes = ["a", "b", "a", "a", "b", "c", "a"]
    batches = shape_batches([6, 0, 1, 2, 3, 4, 5], shapes.__getitem__, 2)
    assert batches == [[6, 0], [2, 3], [1, 4], [5]]  # full batches as they fill, then the partial ones
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(7))


def test_one_shape_batches_are_plain_batches_of_the_epoch_permutation():
    sampler = EpochSampler(11, seed=3)
    sampler.set_epoch(2)
    plain = list(BatchSampler(sampler, 4, drop_last=False))
    assert list(ShapeBatchSampler(sampler, [(4, 32, 32)] * 11, 4)) == plain


def test_batches_follow_an_epoch_set_after_the_iterator_is_made():
    """A resumed run makes its DataLoader iterator before Lightning sets the epoch: the batches must be that
    epoch's (mask seeds are tagged with it)."""
    sampler = EpochSampler(6, seed=0)
    batches = iter(ShapeBatchSampler(sampler, [(4, 32, 32)] * 6, 2))
    sampler.set_epoch(1)
    first = next(batches)
    assert first == list(BatchSampler(sampler, 2, drop_last=False))[0] and min(first) >= 6


def _mixed_folder(synthetic, tmp_path):
    """knee2d files of two shapes in every split: 4 coils 32 x 32 (recon) and 3 coils 24 x 32."""
    from mrirecon.data.coil_maps import embed_maps
    from mrirecon.synthetic.generator import generate

    other = tmp_path / "other"
    generate("knee2d", other, volumes=3, seed=1, coils=3, slices=2, size=(24, 32))
    embed_maps(other, kind="knee2d", calib_width=12)
    root = tmp_path / "mixed"
    for split in ("train", "val", "test"):
        shutil.copytree(synthetic("knee2d") / split, root / split)
        for p in (other / split).glob("*.h5"):
            shutil.copy(p, root / split / f"small_{p.name}")
    return root


def test_mixed_matrix_sizes_and_coil_counts_train_with_batch_size_2(synthetic, tmp_path):
    from mrirecon.training.run import train

    root = _mixed_folder(synthetic, tmp_path)
    cfg = load_config("configs/knee2d.yaml", [
        f"data.root={root}", "data.batch_size=2", f"output_dir={tmp_path / 'runs'}", "train.max_epochs=1",
        "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}", *TINY_NET])
    data = ReconDataModule(cfg)
    ds = data.dataset("train")
    shapes = Counter(ds.item_shape(i) for i in range(len(ds)))
    assert shapes == {(4, 32, 32): 2, (3, 24, 32): 2}  # readout cropped to the recon size
    batches = list(data.train_dataloader().batch_sampler)
    assert sorted(len(b) for b in batches) == [2, 2]
    assert all(len({ds.item_shape(t % len(ds)) for t in b}) == 1 for b in batches)
    run = train(cfg, enable_progress_bar=False)  # no `stack expects each tensor to be equal size`
    assert run.last_checkpoint and np.isfinite(run.best_score)
