"""``instance_norm`` sharded over 8 host devices: results, shardings, compiled HLO (issue 5).

The 8 devices exist only in a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8``
must be set before jax starts, and this pytest process keeps its single device): it runs
``tests/_sharding_checks.py`` once per module (every check in one process, much cheaper than
one subprocess each), which prints JSON; the tests below assert on it. What is checked:

* ``jit`` with ``NamedSharding``, input sharded along the batch, the channels, the depth of a
  3-D volume, or batch x depth (a 2 x 4 mesh), channels first (``channel_axis=1``) and last
  (``channel_axis=-1``), training forward, eval forward and ``jax.vjp``, on an ``Auto`` mesh
  (``jax.sharding.Mesh``'s default) and an ``Explicit`` one (``jax.make_mesh``'s default):
  the output, the running stats and the gradients equal the same function on one device and an
  independent float64 numpy reference; the output (and ``dx``) keep the input's sharding.
* In the compiled HLO (``jit(f).lower(...).compile().as_text()``), every collective
  (all-gather, all-reduce, all-to-all, collective-permute, reduce-scatter, ...) moves arrays no
  bigger than the per-instance statistics (``N * C`` elements): no activation is ever gathered,
  also for larger shapes compiled from abstract inputs (a size-dependent fast path is covered).
  A control function that does gather its input proves the parser sees such a gather.
* ``shard_map`` and ``pmap`` with ``axis_name``: every shard's running stats equal the global
  ones (and, as a control, differ without ``axis_name``); a data-parallel training step equals
  the same step on one device.
* The "Scaling out" example of the README (or ``docs/scaling.md``) runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCRIPT = TESTS / "_sharding_checks.py"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import _sharding_checks as checks  # noqa: E402
from conftest import skip_without_source_tree  # noqa: E402

# All in one xdist worker, so that the 8-device subprocess runs once.
pytestmark = pytest.mark.xdist_group("sharding")

#: float32 everywhere: a sharded reduction only reorders sums (relative error ~1e-7).
TOL_SINGLE_DEVICE = 1e-5
TOL_FLOAT64 = 2e-5
#: Every collective together moves less than this fraction of the activation's elements.
MAX_COMMUNICATED_FRACTION = 0.01

JIT_CASES = checks.jit_case_names()
HLO_CASES = [f"{name}/{fn}" for name in checks.HLO_CASES for fn in ("train", "vjp")]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if checks.DEVICE_FLAG not in flags:
        env["XLA_FLAGS"] = f"{flags} {checks.DEVICE_FLAG}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=_subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{SCRIPT.name} exited with {proc.returncode}; stderr tail:\n{proc.stderr[-4000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    report = json.loads(lines[-1])
    assert report["devices"] == checks.DEVICES, report
    assert report["platform"] == "cpu", report
    return report["checks"]


def _check(results: dict[str, Any], name: str) -> dict[str, Any]:
    check = results[name]
    if "error" in check:
        pytest.fail(
            f"{name} raised in the {checks.DEVICES}-device subprocess:\n{check['error']}\n"
            f"{check.get('traceback', '')}"
        )
    return check


def _arrays(collective: dict[str, Any]) -> list[dict[str, Any]]:
    return collective["results"] + collective["operands"]


def _describe(collectives: list[dict[str, Any]]) -> str:
    if not collectives:
        return "  (none)"
    lines = []
    for c in collectives:
        shapes = ", ".join(f"{a['dtype']}{a['shape']}" for a in c["results"])
        operands = ", ".join(f"{a['dtype']}{a['shape']}" for a in c["operands"])
        lines.append(f"  {c['op']} %{c['name']}: result ({shapes}) <- operands ({operands})")
        lines.append(f"      {c['line'][:200]}")
    return "\n".join(lines)


def _collectives_of(check: dict[str, Any], fn: str | None) -> list[dict[str, Any]]:
    return check["collectives"] if fn is None else check["collectives"][fn]


def _oversized(collectives: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return [c for c in collectives if any(a["elements"] > limit for a in _arrays(c))]


def _assert_only_statistics_cross_devices(name: str, check: dict[str, Any], fn: str | None):
    collectives = _collectives_of(check, fn)
    limit = check["instance_elements"]
    activation = check["activation_elements"]
    too_big = _oversized(collectives, limit)
    assert not too_big, (
        f"{name}: collectives bigger than the per-instance statistics (N*C = {limit} elements; "
        f"the activation has {activation}). A sharded input must never be gathered; only "
        f"reductions of per-instance statistics may cross devices. Offending:\n"
        f"{_describe(too_big)}\nAll collectives:\n{_describe(collectives)}"
    )
    total = sum(a["elements"] for c in collectives for a in c["results"])
    assert total <= MAX_COMMUNICATED_FRACTION * activation, (
        f"{name}: collectives return {total} elements per device in all, more than "
        f"{MAX_COMMUNICATED_FRACTION:.0%} of the activation's {activation}:\n"
        f"{_describe(collectives)}"
    )


# --- jit with NamedSharding --------------------------------------------------------------------


@pytest.mark.parametrize("name", JIT_CASES)
def test_jit_matches_single_device_and_float64(results: dict[str, Any], name: str) -> None:
    check = _check(results, name)
    expected = {"y", "rm", "rv"} | ({"dx", "dw", "db"} if "/vjp" in name else set())
    assert set(check["err_vs_single_device"]) == expected
    bad = {k: v for k, v in check["err_vs_single_device"].items() if not v <= TOL_SINGLE_DEVICE}
    assert not bad, f"{name}: sharded differs from one device (max rel. error): {bad}"
    bad = {k: v for k, v in check["err_vs_float64"].items() if not v <= TOL_FLOAT64}
    assert not bad, f"{name}: sharded differs from the float64 reference: {bad}"


@pytest.mark.parametrize("name", JIT_CASES)
def test_jit_output_keeps_the_input_sharding(results: dict[str, Any], name: str) -> None:
    check = _check(results, name)
    keeps = check["output_keeps_input_sharding"]
    assert set(keeps) == ({"y", "dx"} if "/vjp" in name else {"y"})
    assert all(keeps.values()), (
        f"{name}: input sharded as {check['input_spec']}, outputs came back as "
        f"{check['output_specs']}"
    )


@pytest.mark.parametrize("name", JIT_CASES)
def test_jit_only_statistics_cross_devices(results: dict[str, Any], name: str) -> None:
    _assert_only_statistics_cross_devices(name, _check(results, name), None)


@pytest.mark.parametrize("name", [n for n in JIT_CASES if "/eval" in n])
def test_eval_with_running_stats_needs_no_communication(results: dict[str, Any], name: str) -> None:
    # Normalising with (replicated) running stats is elementwise: nothing crosses devices.
    check = _check(results, name)
    assert check["collectives"] == [], f"{name}:\n{_describe(check['collectives'])}"


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in JIT_CASES
        if "/channel/" in n and (not n.startswith("jit/explicit/") or n.endswith("/train"))
    ],
)
def test_channel_sharding_compiles_with_no_collective_at_all(
    results: dict[str, Any], name: str
) -> None:
    # Every instance (n, c) lives on one device, and so do its channel's running stats:
    # nothing needs to travel, not even a flag (the core never branches on data).
    check = _check(results, name)
    assert check["collectives"] == [], (
        f"{name}: channel-sharded, yet:\n{_describe(check['collectives'])}"
    )


@pytest.mark.parametrize(
    "name", [n for n in JIT_CASES if n.startswith("jit/explicit/") and n.endswith("/channel/vjp")]
)
def test_channel_sharding_with_replicated_weights_gathers_only_their_gradients(
    results: dict[str, Any], name: str
) -> None:
    # Under an explicit mesh, weight and bias typed as replicated must get replicated
    # gradients: their per-channel sums cross devices (at most N*C values), nothing else.
    check = _check(results, name)
    too_big = _oversized(check["collectives"], check["instance_elements"])
    assert not too_big, f"{name}:\n{_describe(too_big)}"


@pytest.mark.parametrize("name", [n for n in JIT_CASES if "/batch/" in n])
def test_batch_sharding_communicates_only_per_channel_values(
    results: dict[str, Any], name: str
) -> None:
    # Instances are local; only the batch average of the running stats (and, for the vjp, the
    # weight/bias gradients) are reduced over devices: (C,)-sized, or (N, C) under an explicit
    # mesh, where JAX may gather the per-instance values and reduce them locally.
    check = _check(results, name)
    channels = check["instance_elements"] // checks.N
    limit = channels if name.startswith("jit/auto/") else check["instance_elements"]
    too_big = _oversized(check["collectives"], limit)
    assert not too_big, f"{name}: more than {limit} elements cross devices:\n{_describe(too_big)}"


@pytest.mark.parametrize("name", HLO_CASES)
def test_large_shapes_only_statistics_cross_devices(results: dict[str, Any], name: str) -> None:
    case, fn = name.rsplit("/", 1)
    _assert_only_statistics_cross_devices(name, _check(results, case), fn)


def test_hlo_parser_sees_a_gathered_activation(results: dict[str, Any]) -> None:
    # Control: a function that replicates its depth-sharded input must be caught by the same
    # criterion, or the tests above could not fail.
    check = _check(results, "control/gather")
    too_big = _oversized(check["collectives"], check["instance_elements"])
    assert [c["op"] for c in too_big] == ["all-gather"], _describe(check["collectives"])
    assert max(a["elements"] for a in _arrays(too_big[0])) == check["activation_elements"]


def test_every_case_was_run(results: dict[str, Any]) -> None:
    assert set(JIT_CASES) <= set(results)
    assert set(checks.HLO_CASES) <= set(results)
    assert {n.split("/")[1] for n in JIT_CASES} == {"auto", "explicit"}
    assert {n.split("/")[3] for n in JIT_CASES} == set(checks.SHARDINGS)


# --- shard_map / pmap with axis_name ---------------------------------------------------------


def _assert_global_stats(name: str, check: dict[str, Any]) -> None:
    assert check["shards"] == checks.DEVICES
    assert check["err_y"] <= TOL_FLOAT64, f"{name}: output error {check['err_y']}"
    for stat in ("rm", "rv"):
        errors = check[f"err_{stat}_per_shard"]
        assert len(errors) == checks.DEVICES
        assert max(errors) <= TOL_FLOAT64, (
            f"{name}: running {stat} per shard vs the global float64 reference: {errors}"
        )


@pytest.mark.parametrize("layout", list(checks.LAYOUTS))
def test_shard_map_axis_name_gives_every_shard_the_global_running_stats(
    results: dict[str, Any], layout: str
) -> None:
    name = f"shard_map/{layout}/axis_name"
    check = _check(results, name)
    _assert_global_stats(name, check)
    assert check["spread_rm"] == 0.0 and check["spread_rv"] == 0.0, check


@pytest.mark.parametrize("layout", list(checks.LAYOUTS))
def test_shard_map_without_axis_name_gives_local_running_stats(
    results: dict[str, Any], layout: str
) -> None:
    # Control for the test above: without axis_name each shard sees only its own batch.
    check = _check(results, f"shard_map/{layout}/no_axis_name")
    assert check["err_y"] <= TOL_FLOAT64  # the output is per instance either way
    assert check["spread_rm"] > 1e-2 and check["spread_rv"] > 1e-2, check
    assert min(check["err_rm_per_shard"]) > 1e-3, check


def test_pmap_axis_name_gives_every_replica_the_global_running_stats(
    results: dict[str, Any],
) -> None:
    name = "pmap/ncdhw/axis_name"
    _assert_global_stats(name, _check(results, name))


def test_data_parallel_training_step_matches_one_device(results: dict[str, Any]) -> None:
    check = _check(results, "data_parallel_step")
    assert check["shards"] == checks.DEVICES
    assert check["err_grad_w"] <= TOL_SINGLE_DEVICE, check
    assert check["err_grad_b"] <= TOL_SINGLE_DEVICE, check
    assert max(check["err_rm_per_shard"]) <= TOL_SINGLE_DEVICE, check
    assert max(check["err_rv_per_shard"]) <= TOL_SINGLE_DEVICE, check
    # ... and the one-device step itself is right.
    assert check["err_single_rm_vs_float64"] <= TOL_FLOAT64, check
    assert check["err_single_rv_vs_float64"] <= TOL_FLOAT64, check


# --- the documented example ------------------------------------------------------------------


def _scaling_example() -> str:
    """The first python block of the README's "Scaling out" section (or docs/scaling.md)."""
    for path in (ROOT / "README.md", ROOT / "docs" / "scaling.md"):
        if not path.exists():
            continue
        text = path.read_text()
        section = re.search(r"^## Scaling out\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        if section:
            block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
            assert block, f"{path}: the 'Scaling out' section has no python block"
            return block.group(1)
    pytest.fail("no '## Scaling out' section in README.md or docs/scaling.md")


def test_scaling_out_example_runs() -> None:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the example must set up its devices itself
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _scaling_example()],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["P('data', None, 'space')"] * 2, proc.stdout  # output and dx sharded
    # The shapes that cross devices: per-instance statistics at most, N * C = 4 * 8.
    shapes = re.findall(r"\w+\[([\d,]*)\]", lines[2])
    assert shapes, proc.stdout
    sizes = [math.prod(int(d) for d in s.split(",") if d) for s in shapes]
    assert max(sizes) <= 4 * 8, proc.stdout
    assert lines[3] == "running stats equal the global ones on every shard", proc.stdout


# --- the scaling benchmark -------------------------------------------------------------------


def test_scaling_benchmark_quick_run(tmp_path: Path) -> None:
    # In this 1-device process, main() must re-run itself with 8 host devices.
    skip_without_source_tree("benchmarks")
    pytest.importorskip("matplotlib")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import scaling

    assert scaling.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "scaling.md").read_text()
    assert "| sharding | devices | fwd sent |" in report
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert result["machine"]["jax_devices"] >= 8
    rows = result["rows"]
    shape = tuple(result["shape"])
    per_instance = shape[0] * shape[1]
    assert {(r["sharding"], r["devices"], r["step"]) for r in rows} == {
        (s, n, step)
        for s in ("data", "channel", "spatial")
        for n in (1, 2, 4, 8)
        for step in ("fwd", "fwd_bwd")
    }
    for r in rows:
        label = f"{r['sharding']}/{r['devices']}/{r['step']}"
        assert r["output_sharded_like_input"], label
        assert r["max_rel_err_vs_one_device"] <= TOL_SINGLE_DEVICE, label
        assert r["sent_over_activation"] == pytest.approx(r["sent_bytes"] / r["activation_bytes"])
        assert r["median_s"] > 0, label
        if r["devices"] == 1:
            assert r["collectives"] == [] and r["sent_bytes"] == 0, label
        for c in r["collectives"]:
            for text in c["shapes"]:
                dims = re.findall(r"\d+", text.split("[", 1)[1])
                assert math.prod(int(d) for d in dims) <= per_instance, (label, c)
    by_key = {(r["sharding"], r["devices"], r["step"]): r for r in rows}
    # Splitting a volume spatially needs the per-instance sums; splitting the batch only the
    # per-channel running-stat averages: more traffic for spatial, and both grow with devices.
    for step in ("fwd", "fwd_bwd"):
        spatial = [by_key[("spatial", n, step)]["sent_bytes"] for n in (2, 4, 8)]
        data = [by_key[("data", n, step)]["sent_bytes"] for n in (2, 4, 8)]
        assert 0 < spatial[0] < spatial[1] < spatial[2], spatial
        assert 0 < data[0] < data[1] < data[2], data
        assert all(d < s for d, s in zip(data, spatial, strict=True)), (data, spatial)
