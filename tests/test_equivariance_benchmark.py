"""The equivariance experiment's pieces: the synthetic generator's zoom, the goals and the numbers its table shows."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mrirecon.synthetic.generator import TARGET, make_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import equivariance as experiment  # noqa: E402
from markdown_tables import row_of  # noqa: E402

TINY = dict(coils=2, slices=1, size=(32, 32))


def test_zoom_1_leaves_the_data_byte_identical_and_zoom_enlarges_the_anatomy():
    plain, _ = make_volume("knee2d", 0, 0, **TINY)
    same, _ = make_volume("knee2d", 0, 0, zoom=1.0, **TINY)
    assert np.array_equal(plain[TARGET], same[TARGET])

    def covered(image: np.ndarray) -> float:
        return float((image > 0.1 * image.max()).mean())

    small, _ = make_volume("knee2d", 0, 0, zoom=0.6, **TINY)
    large, _ = make_volume("knee2d", 0, 0, zoom=1.6, **TINY)
    assert covered(small[TARGET]) < covered(plain[TARGET]) < covered(large[TARGET])


@pytest.mark.parametrize("kind,zoom,message", [("knee3d", 2.0, "--zoom does not apply to kind knee3d"),
                                               ("knee2d", 0.0, "--zoom must be a finite number > 0")])
def test_bad_zoom_is_refused_by_name(kind, zoom, message):
    with pytest.raises(ValueError, match=message):
        make_volume(kind, 0, 0, zoom=zoom)


def row(prox: str, strategy: str, volumes: int, psnr: dict[str, float], seed: int = 0) -> dict:
    return {"prox": prox, "strategy": strategy, "train_volumes": volumes, "augment": False, "seed": seed,
            "train_seconds": 1.0, "test": {k: {"psnr": v, "ssim": 0.5} for k, v in psnr.items()}}


def test_goals_compare_scale_equivariant_with_resnet_out_of_distribution_and_with_the_least_data():
    rows = [row("resnet", "e2e", 1, {"zoom1": 20.0, "zoom0.6": 18.0, "zoom1.6": 17.0}),
            row("scale_equivariant", "e2e", 1, {"zoom1": 19.5, "zoom0.6": 18.5, "zoom1.6": 18.0}),
            row("resnet", "e2e", 5, {"zoom1": 22.0, "zoom0.6": 20.0, "zoom1.6": 19.0}),
            row("scale_equivariant", "e2e", 5, {"zoom1": 21.0, "zoom0.6": 19.0, "zoom1.6": 19.5}),
            row("resnet", "e2e", 1, {"zoom1": 20.0, "zoom0.6": 18.0, "zoom1.6": 17.0}, seed=1),
            row("scale_equivariant", "e2e", 1, {"zoom1": 21.5, "zoom0.6": 18.5, "zoom1.6": 18.0}, seed=1)]
    goals = {g["goal"]: (g["psnr_gain_db"], g["per_seed"], g["pass"]) for g in experiment.goals(rows)}
    # OOD: seed 0 only (seed 1 has no 5-volume runs); least data: a mean gain of 0.5, but seed 0 loses.
    assert goals == {
        "scale_equivariant beats resnet, out-of-distribution scales (e2e, 5 volume(s))": (-0.25, [-0.25], False),
        "scale_equivariant beats resnet, smallest data (e2e, 1 volume(s))": (0.5, [-0.5, 1.5], False),
    }
    rows[-1]["test"]["zoom1"]["psnr"], rows[1]["test"]["zoom1"]["psnr"] = 21.5, 20.5
    least = [g for g in experiment.goals(rows) if "smallest data" in g["goal"]]
    assert [(g["per_seed"], g["pass"]) for g in least] == [([0.5, 1.5], True)]


def test_results_table_shows_the_measured_scores_the_verdicts_and_an_incomplete_run():
    rows = [row("resnet", "e2e", 1, {"zoom1": 20.0, "zoom0.6": 18.0, "zoom1.6": 17.0}),
            row("scale_equivariant", "e2e", 1, {"zoom1": 21.0, "zoom0.6": 17.0, "zoom1.6": 17.0})]
    rows[1]["test"]["zoom1"]["scale_equivariance_error_x2"] = 0.25
    result = {"meta": {"command": "python benchmarks/equivariance.py", "date": "2026-12-02T00:00:00+00:00",
                       "machine": {"cpu": "cpu", "torch_threads": 1, "torch": "2"}, "setting": "tiny"},
              "cost": {"resnet": {"parameters": 10, "step_time_s": 0.01, "peak_memory_mib": 1.0}},
              "rows": rows, "goals": experiment.goals(rows), "complete": False}
    text = experiment.markdown(result)
    # zoom 1, 0.6, 1.6 as PSNR / SSIM, then the equivariance error of the trained prox
    assert row_of(text, "scale_equivariant", "e2e", "1")[4:8] == ["21.00 / 0.500", "17.00 / 0.500",
                                                                   "17.00 / 0.500", "0.250"]
    # out of distribution (mean of zooms 0.6 and 1.6): 17 - 17.5; with the least data (zoom 1): 21 - 20
    ood = row_of(text, "scale_equivariant beats resnet, out-of-distribution scales (e2e, 1 volume(s))")
    least = row_of(text, "scale_equivariant beats resnet, smallest data (e2e, 1 volume(s))")
    assert (float(ood[1]), ood[3]) == (-0.5, "no") and (float(least[1]), least[3]) == (1.0, "yes")
    assert row_of(text, "resnet", "10")[2:] == ["10.0", "1.00", "1.00"]  # step ms, MiB, memory / resnet
    assert "**Incomplete**" in text


def test_results_table_shows_the_mean_and_half_range_over_seeds():
    rows = [row("resnet", "e2e", 1, {"zoom1": 20.0, "zoom0.6": 18.0, "zoom1.6": 17.0}),
            row("resnet", "e2e", 1, {"zoom1": 21.0, "zoom0.6": 18.0, "zoom1.6": 17.0}, seed=1)]
    result = {"meta": {"command": "c", "date": "d", "machine": {"cpu": "cpu", "torch_threads": 1, "torch": "2"},
                       "setting": "tiny"}, "cost": {}, "rows": rows, "goals": [], "complete": True}
    cells = row_of(experiment.markdown(result), "resnet", "e2e", "1")
    assert cells[4:6] == ["20.50 ±0.50 / 0.500 ±0.000", "18.00 ±0.00 / 0.500 ±0.000"]
