"""Smoke test of the benchmark scripts (``benchmarks/``) on tiny configurations.

No timing assertions on the library: every script must run end to end on JAX's default
device, write a JSON of the documented structure whose ratios are to the R of the same rounds,
a markdown report and a PNG, and every candidate (lucid_jax, naive jnp, Flax, PyTorch where
importable, lucid_jax at a git revision) must agree with the float32 reference. The harness's
arithmetic is checked on stand-in candidates driven by a fake clock.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, skip_without_source_tree

skip_without_source_tree("benchmarks")
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the root there
    sys.path.insert(0, str(ROOT))

from benchmarks import _harness, _inputs, _targets, bench, compare, speed, vmap  # noqa: E402

pytest.importorskip("matplotlib")
HAS_TORCH = importlib.util.find_spec("torch") is not None
#: Run by `make test-peers`, where PyTorch is installed and its candidates are checked too.
pytestmark = pytest.mark.benchmarks
QUESTIONS = {"speed": speed, "vmap": vmap, "compare": compare}
ERROR_KEYS = {"y", "fwd_bwd.y", "dx", "dw", "db"}


#: The tests of the one quick run share a worker, so that it is run once, not once per worker.
QUICK_RUN_GROUP = pytest.mark.xdist_group("bench_quick_run")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """``bench`` with every question, ``compare`` against this checkout's HEAD."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--rounds", "2", "--baseline", "HEAD", "--out", str(out)]
    assert bench.main(argv) == 0
    return json.loads((out / "bench.json").read_text()), out, (out / "bench.md").read_text()


@QUICK_RUN_GROUP
def test_writes_json_markdown_and_png(quick_run: tuple[dict, Path, str]) -> None:
    result, out, report = quick_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ... and the one-figure overview docs/performance.md shows (lucid-jax, Flax, PyTorch).
    assert (out / "bench_overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    assert result["questions"] == ["speed", "vmap", "compare"]
    for question in result["questions"]:
        assert f"#### {question}: " in report
    assert report.count("| candidate | layout | fwd ms |") == len(result["configs"])
    assert "#### Targets" in report
    machine = result["machine"]
    assert machine["backend"] == jax.default_backend()
    assert machine["device_kind"] == jax.devices()[0].device_kind
    assert machine["jax"] == jax.__version__
    assert (machine["torch"] is not None) == HAS_TORCH
    assert machine["torch_device"] == ("cpu" if HAS_TORCH else None)
    assert "timeit" in result["settings"]["timing"]
    assert result["command"][:3] == ["python", "-m", "benchmarks.bench"]
    assert result["settings"]["baseline"] == "HEAD" and result["settings"]["rounds"] == 2


@QUICK_RUN_GROUP
def test_every_configuration_and_candidate(quick_run: tuple[dict, Path, str]) -> None:
    result, _, _ = quick_run
    for name, module in QUESTIONS.items():
        configs = [c for c in result["configs"] if c["question"] == name]
        assert [c["label"] for c in configs] == [c.label for c in module.QUESTION.quick_configs]
    expected = {
        "speed": {"roofline", "lucid_cf", "lucid_cl", "lucid_cf_one_pass", "naive_cf", "naive_cl"},
        "vmap": {"roofline", "lucid_cf", "lucid_cf_vmap"},
        "compare": {"roofline", "lucid_cf", "lucid_cl", "baseline_cf", "baseline_cl"},
    }
    for config in result["configs"]:
        keys = set(expected[config["question"]])
        if config["question"] == "speed" and config["dtype"] == "float32":
            keys |= {"flax_cl"} | ({"torch_cf"} if HAS_TORCH else set())
        elif config["question"] == "speed":
            keys |= {"roofline_f32", "lucid_cf_f32"}
        cands = config["candidates"]
        assert set(cands) == keys
        assert next(iter(cands)) == "roofline"
        assert config["rounds"] == 2 and config["calls_per_sample"] >= 1
        r_times = np.asarray(cands["roofline"]["fwd"]["times_s"])
        assert config["R_s"] == pytest.approx(np.median(r_times))
        for key, cand in cands.items():
            for phase in ("fwd", "fwd_bwd"):
                summary = cand[phase]
                if key.startswith("roofline") and phase == "fwd_bwd":
                    assert summary is None
                    continue
                times = np.asarray(summary["times_s"])
                assert len(times) == 2 and (times > 0).all()
                assert summary["min_s"] <= summary["median_s"] == pytest.approx(np.median(times))
                # The ratio pairs each sample with R's sample of the same round.
                assert summary["ratio_R"] == pytest.approx(np.median(times / r_times))
            if cand["framework"] == "jax" and cand["fwd_bwd"] is not None:
                assert cand["temp_bytes_fwd_bwd"] >= 0
                assert cand["temp_fraction_fwd_bwd"] == pytest.approx(
                    cand["temp_bytes_fwd_bwd"] / cand["input_bytes"]
                )


@QUICK_RUN_GROUP
def test_candidates_agree_with_the_reference(quick_run: tuple[dict, Path, str]) -> None:
    """Every candidate's output and gradients were checked, and agree."""
    result, _, _ = quick_run
    for config in result["configs"]:
        for key, cand in config["candidates"].items():
            if key.startswith("roofline"):
                assert cand["max_rel_err"] == {} and cand["correct"] is None
                continue
            assert set(cand["max_rel_err"]) == ERROR_KEYS, key
            assert cand["correct"] is True, (config["label"], key, cand["max_rel_err"])
            if cand["dtype"] == "float32":
                assert max(cand["max_rel_err"].values()) < 1e-4, (key, cand["max_rel_err"])


@QUICK_RUN_GROUP
def test_targets(quick_run: tuple[dict, Path, str]) -> None:
    result, _, _ = quick_run
    targets = result["targets"]
    assert [t["target"] for t in targets] == [t.text for t in _targets.TARGETS]
    assert all(t["status"] in {"PASS", "FAIL", "SKIP"} for t in targets)
    # The shape is not among the quick shapes: only its two targets go unjudged.
    unjudged = [t for t in targets if t["status"] == "SKIP"]
    assert len(unjudged) == 2 and all("(16,128,128,128)" in t["target"] for t in unjudged)
    assert all(t["measured"] is not None for t in targets if t not in unjudged)
    # bf16 input, float32 statistics: within bf16 rounding of float32 on the same values.
    probe = result["bf16_probe"]
    assert set(probe) == {"lucid_cf", "naive_cf"}
    assert probe["lucid_cf"] <= _targets.BF16_PROBE_LIMIT
    assert next(t for t in targets if "statistics" in t["target"])["status"] == "PASS"


def test_one_script_writes_its_own_files_and_targets(tmp_path: Path) -> None:
    assert vmap.main(["--quick", "--rounds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "vmap.json").read_text())
    assert (tmp_path / "vmap.png").exists() and (tmp_path / "vmap.md").exists()
    assert result["questions"] == ["vmap"] and "torch" not in result["machine"]
    assert {t["question"] for t in result["targets"]} == {"vmap"}
    assert all(t["status"] != "SKIP" for t in result["targets"])


def test_shape_selection_and_bad_options(tmp_path: Path) -> None:
    labels = [c.label for c in _inputs.select(speed.CONFIGS, ["8x64x64x64"])]
    assert labels == ["8x64x64x64-f32", "8x64x64x64-f32-offset30", "8x64x64x64-bf16"]
    only = _inputs.select(speed.CONFIGS, ["16x128x128x128-bf16"])
    assert [(c.shape, c.dtype) for c in only] == [((16, 128, 128, 128), "bfloat16")]
    assert _inputs.select(speed.CONFIGS, None) == list(speed.CONFIGS)
    with pytest.raises(SystemExit, match="matches nothing"):
        vmap.main(["--shapes", "3x3", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # compare needs a revision
        compare.main(["--quick", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


class FakeClock:
    """A clock that stands still but for what the stand-in candidates say they cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def costing(self, seconds: float, output: object):
        def run() -> object:
            self.now += seconds
            return output

        return run


def test_harness_ratios_and_wrong_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake clock: exact ratios to R, the calls per sample autorange implies, and a
    candidate whose output is off is marked wrong (and said so)."""
    clock = FakeClock()
    monkeypatch.setattr(_harness, "CLOCK", clock)
    unit = 2.0**-10  # powers of two: the fake times add up exactly
    rng = np.random.default_rng(0)
    reference = {k: jax.numpy.asarray(rng.normal(size=(2, 3, 4))) for k in ("y", "dx")}
    reference |= {k: jax.numpy.asarray(rng.normal(size=3)) for k in ("dw", "db")}
    good = (reference["y"], (reference["dx"], reference["dw"], reference["db"]))
    bad = (reference["y"] + 1.0, good[1])

    def candidate(key: str, fwd_cost: float, fwd_bwd_cost: float | None, outputs):
        return _harness.Candidate(
            key=key,
            label=key,
            framework="jax",
            layout="NC...",
            dtype="float32",
            input_bytes=96,
            fwd=clock.costing(fwd_cost, outputs[0]),
            fwd_bwd=None if fwd_bwd_cost is None else clock.costing(fwd_bwd_cost, outputs),
            sync=lambda out: out,
        )

    candidates = [
        candidate("roofline", unit, None, good),
        candidate("good", 3 * unit, 7 * unit, good),
        candidate("bad", 2 * unit, 4 * unit, bad),
    ]
    messages: list[str] = []
    result = _harness.measure(
        candidates, reference, rounds=3, min_sample_s=16 * unit, log=messages.append
    )
    assert result["calls_per_sample"] == 16 and result["R_s"] == unit
    cands = result["candidates"]
    for key, fwd, fwd_bwd in (("good", 3, 7), ("bad", 2, 4)):
        assert cands[key]["fwd"]["times_s"] == [fwd * unit] * 3
        assert cands[key]["fwd"]["ratio_R"] == fwd
        assert cands[key]["fwd_bwd"]["ratio_R"] == fwd_bwd
    assert cands["good"]["correct"] is True and max(cands["good"]["max_rel_err"].values()) == 0
    assert cands["bad"]["correct"] is False
    assert set(cands["bad"]["max_rel_err"]) == ERROR_KEYS
    assert [m for m in messages if "WRONG" in m] == [
        f"    WRONG: bad differs from the reference: {cands['bad']['max_rel_err']}"
    ]
    with pytest.raises(ValueError, match="first candidate must be the roofline"):
        _harness.measure(candidates[1:], reference, rounds=1, min_sample_s=0.0, log=print)


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
