"""Smoke test of benchmarks/varnet.py: one tiny run end to end, checking what it writes."""
import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

from markdown_tables import row_of

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("benchmark_varnet", ROOT / "benchmarks" / "varnet.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

OVERRIDES = ["model.num_unrolls=2", "model.prox.channels=8"]
TINY = ["--size", "16", "16", "--coils", "2", "--slices", "1", "--steps", "2", "--warmup", "0",
        "--infer-repeats", "1", "--threads", "1", "--override", *OVERRIDES]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "varnet.json"
    returned = bench.main(["--json", str(out), *TINY])
    return out, returned


def test_writes_json_equal_to_result_and_markdown_without_temp_files(run):
    out, returned = run
    assert json.loads(out.read_text()) == json.loads(json.dumps(returned))
    assert sorted(p.name for p in out.parent.iterdir()) == ["varnet.json", "varnet.md"]


def test_meta_block_records_command_machine_versions_and_sizes(run):
    _, result = run
    meta = result["meta"]
    assert meta["command"].endswith("benchmarks/varnet.py --json " + str(run[0]) + " " + " ".join(TINY))
    assert meta["date"].endswith("+00:00")
    assert meta["machine"]["cpu"] and meta["machine"]["gpu"] is None and meta["machine"]["torch_threads"] == 1
    assert meta["device"] == "cpu" and meta["torch"] and meta["fastmri"] == "0.3.0"
    assert set(meta["load_average"]) == {"start", "end"}
    assert meta["config"] == "configs/knee2d.yaml" and meta["overrides"] == OVERRIDES
    assert meta["sizes"] == {"height": 16, "width": 16, "coils": 2, "batch": 1, "slices": 1, "steps": 2,
                             "warmup": 0, "infer_repeats": 1, "num_low_frequencies": 1}  # round(16 * 0.08)


def test_rows_are_ours_e2e_ours_gleam_and_varnet_with_consistent_timings(run):
    rows = run[1]["rows"]
    assert [(r["model"], r["training"]) for r in rows] == [
        ("mrirecon unrolled PGD", "e2e"), ("mrirecon unrolled PGD", "gleam"), ("fastmri VarNet", "e2e")]
    for r in rows:
        assert set(bench.ROW_KEYS) <= set(r)
        assert len(r["train_step_times_s"]) == 2 and len(r["infer_times_s_per_slice"]) == 1
        assert r["train_step_s"] == statistics.median(r["train_step_times_s"]) > 0
        assert math.isclose(r["train_steps_per_s"], 1 / r["train_step_s"])
        assert r["infer_s_per_slice"] == r["infer_times_s_per_slice"][0] > 0
        assert r["peak_train_mib"] > r["peak_infer_mib"] > 0
    assert rows[1]["settings"]["num_modules"] == 2 and rows[1]["settings"]["optimizers"] == 2


def test_parameter_counts_are_the_built_networks_and_varnet_width_is_the_closest_match(run):
    from fastmri.models import VarNet

    from mrirecon.config import load_config
    from mrirecon.models.build import build_network

    ours, gleam, vn = run[1]["rows"]
    expected = build_network(load_config(bench.DEFAULT_CONFIG, OVERRIDES)).num_parameters()
    assert ours["params"] == gleam["params"] == expected
    s = vn["settings"]
    assert s["num_cascades"] == 2 and s["chans_from"] == "closest parameter count to ours"

    def count(chans):
        net = VarNet(num_cascades=2, chans=chans, pools=s["pools"], sens_chans=s["sens_chans"],
                     sens_pools=s["sens_pools"])
        return sum(p.numel() for p in net.parameters())

    assert vn["params"] == count(s["chans"])
    gap = abs(vn["params"] - expected)
    assert gap <= abs(count(s["chans"] + 1) - expected)
    assert s["chans"] == 1 or gap <= abs(count(s["chans"] - 1) - expected)


def test_markdown_table_shows_each_rows_measured_numbers(run):
    md = run[0].with_suffix(".md").read_text()
    for r in run[1]["rows"]:
        cells = row_of(md, r["model"], r["training"])
        assert int(cells[2].replace(",", "")) == r["params"]
        assert float(cells[3]) == pytest.approx(r["train_steps_per_s"], abs=5e-4)
        assert float(cells[5]) == pytest.approx(r["infer_s_per_slice"], abs=5e-5)
        assert float(cells[6]) == pytest.approx(r["peak_train_mib"], abs=0.05)


def test_pools_too_deep_for_the_image_size_fail_naming_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--varnet-pools=4 does not fit --size 16 16"):
        bench.main(["--json", str(tmp_path / "v.json"), "--size", "16", "16", "--varnet-pools", "4"])
    assert not any(tmp_path.iterdir())
