"""Smoke test of the benchmark harness (``python -m benchmarks.bench --quick``).

No timing assertions: the harness must run end to end on tiny shapes, write a JSON of the
documented structure with self-consistent ratios, a markdown report and a PNG, and every
candidate (lucid_jax in both layouts, naive jnp, Flax, PyTorch) must agree with the harness's
float32 reference, so that a broken candidate cannot pass for a fast one.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, skip_without_source_tree

skip_without_source_tree("benchmarks")
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the root there
    sys.path.insert(0, str(ROOT))

from benchmarks import bench  # noqa: E402

pytest.importorskip("matplotlib")
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--quick", "--rounds", "2", "--out", str(out)]) == 0
    return json.loads((out / "bench.json").read_text()), out, (out / "bench.md").read_text()


def test_writes_json_markdown_and_png(quick_run: tuple[dict, Path, str]) -> None:
    result, out, report = quick_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    assert "| candidate | layout | forward ms | forward / R |" in report
    assert "#### Targets (issue 3)" in report
    assert "| shape | dtype | R ms | lucid NC… fwd |" in report
    # One summary row per configuration, one detailed table per configuration.
    assert report.count("| (2,3,8,8) |") == 2
    assert report.count("| candidate | layout |") == len(result["configs"])
    machine = result["machine"]
    for key in ("cpu_model", "usable_cores", "jax", "jaxlib", "torch", "flax", "numpy"):
        assert key in machine
    assert "cpu" in machine["jax_device"].lower()
    assert isinstance(machine["usable_cores"], int) and machine["usable_cores"] >= 1
    if HAS_TORCH:
        assert machine["torch"] and machine["torch_threads"] == machine["usable_cores"]


def test_every_quick_configuration_and_candidate(quick_run: tuple[dict, Path, str]) -> None:
    result, _, _ = quick_run
    labels = [c["label"] for c in result["configs"]]
    assert labels == [c.label for c in bench.QUICK_CONFIGS]
    for config in result["configs"]:
        cands = config["candidates"]
        expected = {"roofline", "roofline_donated", "lucid_cf", "lucid_cl", "naive_cf", "naive_cl"}
        expected |= {"lucid_cf_one_pass", "lucid_cf_vmap"}
        if config["dtype"] == "float32":
            expected |= {"flax_cl"} | ({"torch_cf"} if HAS_TORCH else set())
        else:
            expected |= {"roofline_f32", "lucid_cf_f32"}
        assert set(cands) == expected
        assert config["rounds"] == 2 and config["calls_per_sample"] >= 1
        r_median = config["R_s"]
        assert r_median == pytest.approx(cands["roofline"]["fwd"]["median_s"])
        assert cands["roofline"]["fwd"]["ratio_R"] == pytest.approx(1.0)
        for key, cand in cands.items():
            for phase in ("fwd", "fwd_bwd"):
                summary = cand[phase]
                if key.startswith("roofline") and phase == "fwd_bwd":
                    assert summary is None
                    continue
                assert len(summary["times_s"]) == 2
                assert all(t > 0 for t in summary["times_s"])
                assert summary["min_s"] <= summary["median_s"]
                assert summary["ratio_R"] == pytest.approx(summary["median_s"] / r_median)
            if cand["framework"] == "jax" and cand["fwd_bwd"] is not None:
                assert isinstance(cand["temp_bytes_fwd_bwd"], int)
                assert cand["temp_fraction_fwd_bwd"] == pytest.approx(
                    cand["temp_bytes_fwd_bwd"] / cand["input_bytes"]
                )


def test_candidates_agree_with_the_reference(quick_run: tuple[dict, Path, str]) -> None:
    """lucid_jax (both layouts), Flax, naive jnp and PyTorch compute the same thing."""
    result, _, _ = quick_run
    for config in result["configs"]:
        for key, cand in config["candidates"].items():
            if key.startswith("roofline"):
                assert cand["max_rel_err"] == {} and cand["correct"] is None
                continue
            assert set(cand["max_rel_err"]) == {"y", "fwd_bwd.y", "dx", "dw", "db"}, key
            assert cand["correct"] is True, (config["label"], key, cand["max_rel_err"])
            if config["dtype"] == "float32" or key.endswith("_f32"):
                assert max(cand["max_rel_err"].values()) < 1e-4, (key, cand["max_rel_err"])


def test_targets_section(quick_run: tuple[dict, Path, str]) -> None:
    result, _, _ = quick_run
    targets = result["targets"]
    assert len(targets) == 12
    assert all(t["status"] in {"PASS", "FAIL", "SKIP"} for t in targets)
    # The shapes are not among the quick shapes, and the quick run has no --baseline:
    # those targets cannot be judged; every other one is measured.
    unjudged = [
        t
        for t in targets
        if "(16,128,128,128)" in t["target"]
        or "(16,64,64,64)" in t["target"]
        or "--baseline" in t["target"]
    ]
    assert [t["status"] for t in unjudged] == ["SKIP"] * 6, unjudged
    assert all(t["measured"] is not None for t in targets if t not in unjudged)
    # bf16 input, float32 statistics: lucid_jax's bf16 output is within bf16 rounding of a
    # float32 computation on the same values.
    probe = result["bf16_probe"]
    assert set(probe) == {"lucid_cf", "naive_cf"}
    assert probe["lucid_cf"] <= bench.BF16_PROBE_TOLERANCE
    assert targets[-1]["status"] == "PASS"


def test_shape_selection() -> None:
    configs = bench.FULL_CONFIGS
    both = bench.select_configs(configs, ["8x64x64x64"])
    assert [c.label for c in both] == [
        "8x64x64x64-f32",
        "8x64x64x64-f32-offset30",
        "8x64x64x64-bf16",
    ]
    only = bench.select_configs(configs, ["16x128x128x128-bf16"])
    assert [(c.shape, c.dtype) for c in only] == [((16, 128, 128, 128), "bfloat16")]
    assert bench.select_configs(configs, None) == list(configs)
    with pytest.raises(SystemExit, match="matches no configuration"):
        bench.select_configs(configs, ["3x3"])


def test_accuracy_table_runs_and_lists_every_layout(capsys) -> None:
    from benchmarks import accuracy

    accuracy.main(["--no-torch"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| layout | lucid_jax two_pass y | lucid_jax two_pass dx")
    assert [r.split("|")[1].strip() for r in rows[1:]] == list(accuracy.LAYOUTS)
    lucid_errors = [float(cell) for r in rows[1:] for cell in r.split("|")[2:4]]
    assert max(lucid_errors) < 1e-5  # float32 level on every layout (Flax's default is not)
    one_pass_errors = [float(r.split("|")[4]) for r in rows[1:]]
    assert max(one_pass_errors) > 1.0  # the one-pass formula fails far from zero, as documented
