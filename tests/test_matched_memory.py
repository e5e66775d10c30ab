"""The matched-memory experiment: its configs, the goals it checks, and a --quick run end to end."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks import matched_memory as mm
from markdown_tables import row_of
from mrirecon.config import load_config

KINDS = mm.available_kinds()


def test_there_are_configs_for_knee2d_and_a_second_kind():
    assert KINDS[0] == "knee2d" and len(KINDS) == 2 and KINDS[1] in ("knee3d", "cine")
    for kind in KINDS:
        assert sorted(p.name for p in mm.CONFIG_DIR.glob(f"{kind}_*.yaml")) == sorted(
            f"{kind}_{s}.yaml" for s in mm.STRATEGIES)


@pytest.mark.parametrize("kind", KINDS)
def test_configs_are_the_base_config_with_3n_unrolls_in_3_modules(kind):
    base = load_config(mm.ROOT / "configs" / f"{kind}.yaml")
    cfgs = mm.load_experiment(kind, [])
    n = cfgs["e2e"].model.num_unrolls
    assert {s: (c.model.num_unrolls, c.train.num_modules) for s, c in cfgs.items()} == {
        "e2e": (n, 1), "gleam": (3 * n, 3), "checkpoint": (3 * n, 1), "invertible": (3 * n, 1)}
    for strategy, cfg in cfgs.items():
        # the same data settings, mask and batch as configs/KIND.yaml, in the experiment's own folder (the
        # demo writes a larger data set into the base config's folder)
        assert cfg.data.root == f"data/synthetic/matched_memory/{kind}", strategy
        assert dataclasses.replace(cfg.data, root=base.data.root) == base.data, strategy
        assert (cfg.model.dc, cfg.model.share_weights, cfg.train.lr, cfg.train.loss) == (
            base.model.dc, base.model.share_weights, base.train.lr, base.train.loss)
    # The invertible network differs only by the Lipschitz bound its inversion needs.
    prox = dict(cfgs["invertible"].model.prox)
    assert prox.pop("lipschitz") < 1 and prox == cfgs["e2e"].model.prox == cfgs["gleam"].model.prox
    assert cfgs["invertible"].model.dc == "modl" or cfgs["invertible"].model.step_size_max <= 1


def test_configs_state_their_strategy_and_a_run_name():
    for kind in KINDS:
        for strategy in mm.STRATEGIES:
            cfg = load_config(mm.config_path(kind, strategy))
            assert cfg.train.strategy == strategy
            assert cfg.name == f"matched_memory_{kind}_{strategy}"


def test_configs_of_a_kind_must_share_data_and_schedule(tmp_path, monkeypatch):
    for strategy in mm.STRATEGIES:  # each file inherits the shipped one; gleam's changes one more setting
        extra = "train: {max_epochs: 99}\n" if strategy == "gleam" else ""
        (tmp_path / f"knee2d_{strategy}.yaml").write_text(f"base: {mm.config_path('knee2d', strategy)}\n{extra}")
    monkeypatch.setattr(mm, "CONFIG_DIR", tmp_path)
    with pytest.raises(mm.ConfigError, match=r"knee2d_gleam.yaml: train.max_epochs = \d+ differs"):
        mm.load_experiment("knee2d", [])


def _row(strategy, psnr, seconds, memory, step_seconds=None):
    return {"kind": "knee2d", "strategy": strategy, "psnr": psnr, "train_seconds": seconds,
            "step_seconds": 0.5 * seconds if step_seconds is None else step_seconds, "peak_memory_mib": memory}


def test_goals_are_the_issues_targets():
    rows = [_row("e2e", 30.0, 10.0, 100.0), _row("gleam", 31.5, 40.0, 105.0),
            _row("checkpoint", 31.9, 48.0, 60.0, step_seconds=26.0), _row("invertible", 31.0, 150.0, 40.0)]
    goals = {g["goal"]: g for g in mm.goals(rows)}
    assert {k: (pytest.approx(g["value"]), g["target"], g["pass"]) for k, g in goals.items()} == {
        "psnr_gain_over_e2e_db": (1.5, ">= 1", True),
        "psnr_gap_to_checkpoint_db": (0.4, "<= 0.3", False),
        "speedup_over_checkpoint": (1.2, ">= 1.25", False),
        "step_speedup_over_checkpoint": (1.3, ">= 1.25", True),
        "memory_ratio_to_e2e": (1.05, "<= 1.1", True)}


def test_a_gleam_better_than_checkpointing_is_within_the_gap():
    rows = [_row("gleam", 32.0, 40.0, 1.0), _row("checkpoint", 31.0, 60.0, 1.0)]
    gap = next(g for g in mm.goals(rows) if g["goal"] == "psnr_gap_to_checkpoint_db")
    assert gap["value"] == pytest.approx(-1.0) and gap["pass"] is True


def test_goals_of_a_failed_or_missing_run_are_not_measured():
    rows = [_row("e2e", 30.0, 10.0, 100.0), {"kind": "knee2d", "strategy": "gleam", "error": "NaN loss"}]
    assert [g["pass"] for g in mm.goals(rows)] == [None] * 5


def test_quick_run_writes_results_with_rows_and_goals(tmp_path, capsys):
    # The override applies to every run (and keeps the test fast).
    out, work = tmp_path / "report", tmp_path / "work"
    assert mm.main(["--out", str(out), "--work", str(work), "--quick", "--only", "knee2d", "--device", "cpu",
                    "model.prox.channels=8"]) == 0
    result = json.loads((out / "results.json").read_text())
    meta = result["meta"]
    assert meta["command"].startswith("python benchmarks/matched_memory.py --out")
    assert meta["date"] and meta["machine"]["torch"] and meta["device"] == "cpu"
    assert meta["quick"] is True and meta["complete"] is True and meta["overrides"] == ["model.prox.channels=8"]

    rows = result["rows"]
    assert [(r["strategy"], r["num_unrolls"], r["num_modules"]) for r in rows] == [
        ("e2e", 2, 1), ("gleam", 6, 3), ("checkpoint", 6, 1), ("invertible", 6, 1),
        ("zero_filled", None, None), ("sense", None, None)]
    for r in rows:
        assert set(mm.ROW_KEYS) <= set(r) and r["kind"] == "knee2d"
        assert 0 < r["ssim"] <= 1 and r["psnr"] > 0
    for r in rows[:4]:
        assert r["peak_memory_mib"] > 0 and 0 < r["step_seconds"] < r["train_seconds"] and r["epochs"] == 1
        assert r["parameters"] > 0 and len(r["val_psnr_per_epoch"]) == 1 and r["prox"]["channels"] == 8
    assert rows[1]["parameters"] == 3 * rows[0]["parameters"]  # 3N unrolls of the same prox
    assert set(rows[1]["val_psnr_per_module"]) == {"module1", "module2", "module3"}  # GLEAM's anytime outputs
    assert 0 <= rows[3]["max_inversion_error"] < 1e-4  # MEL rebuilt its inputs
    # One test volume, scored identically whichever reconstruction: the baselines see the same split.
    assert {r["test_volumes"] for r in rows} == {1}

    goals = {g["goal"]: g for g in result["goals"]}
    by = {r["strategy"]: r for r in rows}
    assert goals["psnr_gain_over_e2e_db"]["value"] == pytest.approx(by["gleam"]["psnr"] - by["e2e"]["psnr"])
    assert goals["speedup_over_checkpoint"]["value"] == pytest.approx(
        by["checkpoint"]["train_seconds"] / by["gleam"]["train_seconds"])
    assert all(isinstance(g["pass"], bool) for g in goals.values()) and len(goals) == 5

    # The report shows the measured numbers and verdicts; it keeps one figure per network, while the run
    # folders and evaluations stay in the work folder.
    md = (out / "results.md").read_text()
    for r in rows:
        cells = row_of(md, {"zero_filled": "zero-filled", "sense": "CG-SENSE"}.get(r["strategy"], r["strategy"]))
        assert float(cells[10]) == pytest.approx(r["psnr"], abs=0.005)
    for g in goals.values():
        assert row_of(md, g["description"])[3] == ("pass" if g["pass"] else "fail")
    assert sorted(p.name for p in out.iterdir()) == ["figures", "results.json", "results.md"]
    kept = [Path(r["figures"][0]).name for r in rows[:4]]  # STRATEGY_VOLUME.png
    assert [name.split("_", 1)[0] for name in kept] == list(mm.STRATEGIES)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(kept)
    assert {p.name for p in work.iterdir()} == {"runs", "eval", "quick_data"}
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # atomic writes leave no temporary files
    assert "[knee2d 2/4] gleam: 6 unrolls in 3 modules" in capsys.readouterr().out
