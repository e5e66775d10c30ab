"""The strategies benchmark at tiny sizes: what it records, the ratios it computes and the verdicts it reports."""
from __future__ import annotations

import json

import pytest

from benchmarks import strategies as bench
from markdown_tables import row_of

TINY = ["--device", "cpu", "--size", "16", "16", "--coils", "2", "--channels", "4", "--repeats", "1",
        "--threads", "1"]


def test_strategies_benchmark_computes_its_ratios_from_the_measured_rows_and_reports_them(tmp_path):
    out = tmp_path / "s.json"
    bench.main(["--json", str(out), "--unrolls", "4", *TINY])
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary files left behind

    meta = result["meta"]  # what the report needs to be reproduced
    assert meta["sizes"] == {"dims": 2, "size": [16, 16], "coils": 2, "channels": 4, "batch": 1,
                             "unrolls": [4], "repeats": 1, "seed": 0}
    assert meta["command"].startswith("python benchmarks/strategies.py --json")
    assert meta["machine"]["torch"] and meta["date"] and meta["device"] == "cpu"

    rows = result["rows"]
    assert [(r["label"], r["num_unrolls"], r["num_modules"]) for r in rows] == [
        ("e2e", 4, 1), ("checkpoint", 4, 1), ("invertible", 4, 1), ("gleam M=N", 4, 4), ("gleam M=N/4", 4, 1)]
    for r in rows:
        assert set(bench.ROW_KEYS) <= set(r)
        assert r["peak_memory_mib"] == pytest.approx(r["before_step_mib"] + r["peak_step_mib"])
        assert r["step_time_s"] > 0 and r["parameters"] == rows[0]["parameters"]
    inv = rows[2]
    assert inv["inversion_error"] < 1e-4 and inv["gradient_error_vs_e2e"] < 1e-3

    by = {(r["label"], r["num_unrolls"]): r for r in rows}
    ratios = {(q["ratio"], str(q["num_unrolls"])): q for q in result["ratios"]}
    assert len(ratios) == 7 + 1
    mem = ratios[("memory e2e / gleam(M=N)", "4")]
    assert mem["value"] == pytest.approx(by[("e2e", 4)]["peak_memory_mib"] / by[("gleam M=N", 4)]["peak_memory_mib"])
    assert mem["target_value"] == pytest.approx(3.2) and mem["pass"] == (mem["value"] >= 3.2)
    ckpt = ratios[("time checkpoint / gleam(M=N)", "4")]
    assert ckpt["value"] == pytest.approx(by[("checkpoint", 4)]["step_time_s"] / by[("gleam M=N", 4)]["step_time_s"])
    # The N=16 / N=4 memory ratio of the invertible strategy needs two values of N: not measured here.
    assert ratios[("memory invertible N=4 / N=4", "[4, 4]")]["pass"] is None
    assert all(isinstance(q["pass"], bool) for q in ratios.values() if not q["ratio"].startswith("memory invertible"))
    assert result["summary"] == {"passed": result["summary"]["passed"], "failed": 7 - result["summary"]["passed"],
                                 "not_measured": 1}

    # The report shows the measured numbers and the verdicts computed above.
    md = out.with_suffix(".md").read_text()
    for r in rows:
        cells = row_of(md, r["label"], "4")
        assert float(cells[4]) == pytest.approx(r["peak_memory_mib"], abs=0.005)
        assert float(cells[9]) == pytest.approx(r["step_time_s"], abs=0.0005)
    for q in (mem, ckpt):
        cells = row_of(md, q["ratio"], "4")
        assert float(cells[2]) == pytest.approx(q["value"], rel=1e-2) and cells[4] == ("pass" if q["pass"] else "FAIL")


def test_without_an_invertible_prox_the_invertible_ratios_are_not_measured(tmp_path):
    result = bench.main(["--json", str(tmp_path / "s.json"), "--unrolls", "4", "--lipschitz", "none", *TINY])
    assert "invertible" not in {r["strategy"] for r in result["rows"]}
    missing = [q["ratio"] for q in result["ratios"] if q["pass"] is None]
    assert missing == ["time invertible / gleam(M=N)", "time invertible / gleam(M=N/4)", "memory invertible N=4 / N=4"]


def test_ratio_targets_follow_the_issue():
    def row(label, n, mem, t):
        return {"label": label, "num_unrolls": n, "peak_memory_mib": mem, "peak_step_mib": mem, "step_time_s": t}

    rows = [row("e2e", 8, 64.0, 1.0), row("checkpoint", 8, 10.0, 1.3), row("invertible", 8, 9.0, 1.2),
            row("gleam M=N", 8, 10.0, 1.0), row("gleam M=N/4", 8, 20.0, 1.2)]
    got = {q["ratio"]: (q["value"], q["pass"]) for q in bench.ratios(rows)}
    assert got["memory e2e / gleam(M=N)"] == (6.4, True)  # 0.8 N with N = 8
    assert got["time gleam(M=N/4) / e2e"] == (pytest.approx(1.2), False)
    assert got["time checkpoint / gleam(M=N)"] == (pytest.approx(1.3), True)
    assert got["time invertible / gleam(M=N)"] == (pytest.approx(1.2), False)


@pytest.mark.parametrize("argv", [["--unrolls", "6"], ["--size", "16"], ["--lipschitz", "1.5"], ["--repeats", "0"]])
def test_bad_settings_are_refused_before_any_work(tmp_path, argv, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--json", str(tmp_path / "s.json"), *argv])
    assert "--" + argv[0].lstrip("-") in capsys.readouterr().err
