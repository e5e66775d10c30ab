"""The cine matched-memory experiment (benchmarks/cine_matched_memory.py): its configs match memory as
GLEAM does, and its goal is judged from the measured rows."""
import pytest

from benchmarks import cine_matched_memory as cmm


def test_configs_compare_n_unrolls_end_to_end_with_3n_in_3_modules():
    configs = cmm.load_configs([])
    n = configs["e2e"].model.num_unrolls
    assert configs["gleam"].model.num_unrolls == 3 * n and configs["gleam"].train.num_modules == 3
    assert configs["checkpoint"].model.num_unrolls == configs["invertible"].model.num_unrolls == 3 * n
    assert {c.data.kind for c in configs.values()} == {"cine"}
    assert all(c.model.prox["name"] == "resnet" for c in configs.values())  # 3D convolutions over (t, y, x)


@pytest.mark.parametrize("gleam_psnr,passed", [(31.9, False), (32.0, True)])
def test_goal_is_two_db_over_e2e(gleam_psnr, passed):
    rows = [{"strategy": "e2e", "psnr": 30.0, "peak_memory_mib": 10.0},
            {"strategy": "gleam", "psnr": gleam_psnr, "peak_memory_mib": 12.0}]
    gain, memory = cmm.goals(rows)
    assert gain["value"] == pytest.approx(gleam_psnr - 30.0) and gain["pass"] is passed
    assert memory["value"] == pytest.approx(1.2) and memory["pass"] is False


def test_goal_is_not_measured_when_a_run_failed():
    rows = [{"strategy": "e2e", "psnr": 30.0}, {"strategy": "gleam", "error": "boom"}]
    assert cmm.goals(rows)[0]["pass"] is None
