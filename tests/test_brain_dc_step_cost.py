"""The PGD-vs-MoDL step-cost benchmark of the brain demo's network, at tiny sizes: it times the demo's two
networks, which differ only in their data consistency, and its ratio is that of the times it reports."""
from __future__ import annotations

import json

import pytest

from benchmarks import brain_dc_step_cost as bench


def test_step_cost_times_both_data_consistencies_and_reports_their_ratio(synthetic, tmp_path):
    out = tmp_path / "cost.json"
    result = bench.main(["--repeats", "1", "--json", str(out), f"data.root={synthetic('brain2d')}",
                         "model.num_unrolls=2", "model.prox.channels=8"])
    assert json.loads(out.read_text()) == result
    assert result["dc"] == {"pgd": "pgd", "modl": "modl"}
    ms = result["ms_per_step"]
    assert ms["pgd"] > 0 and ms["modl"] > 0
    assert result["modl_over_pgd"] == pytest.approx(ms["modl"] / ms["pgd"])
    assert result["steps"] == min(20, len(list((synthetic("brain2d") / "train").glob("*.h5"))) * 2)
