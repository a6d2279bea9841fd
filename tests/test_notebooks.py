"""The notebooks: committed stripped, Colab-ready, and executed end to end with nbclient.

Each notebook runs in a fresh kernel of this interpreter (the venv's python). After its last cell
a probe cell saves some of what it computed; the checks below recompute those results with the
float64 numpy reference of ``conftest.py``, independently of the notebook's own asserts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, reference_instance_norm, skip_without_source_tree

nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra")
nbclient = pytest.importorskip("nbclient", reason="needs the notebooks extra")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

skip_without_source_tree("notebooks")
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_quickstart", "02_flax_training", "03_style_transfer"]
#: The project's home, named once in pyproject.toml: badges and the install cell derive from it.
REPOSITORY_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"
]
COLAB = (
    "https://colab.research.google.com/github/"
    + REPOSITORY_URL.removeprefix("https://github.com/")
    + "/blob/main/notebooks/{}.ipynb"
)
PACKAGE = f"lucid-jax[flax] @ git+{REPOSITORY_URL}"
CELL_TIMEOUT_S = 300
#: The environment variable naming where executed notebooks are kept for the docs site.
EXECUTED_NOTEBOOKS = "LUCID_JAX_EXECUTED_NOTEBOOKS"
# Packages a notebook needs beyond the core install (the `flax` extra).
REQUIRES = {"02_flax_training": ["flax", "optax"], "03_style_transfer": ["optax"]}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


# --- the committed files ------------------------------------------------------------------


def test_every_committed_notebook_is_listed():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs_and_no_execution_counts(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    for index, cell in enumerate(_code_cells(notebook)):
        assert cell.outputs == [], f"{name}: code cell {index} has outputs; strip them"
        assert cell.execution_count is None, f"{name}: code cell {index} has an execution count"


def test_every_notebook_has_its_text_source():
    assert sorted(path.stem for path in NOTEBOOKS.glob("0*.py")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_its_jupytext_source(name):
    """The .ipynb (what Colab opens) holds exactly the cells of notebooks/{name}.py."""
    jupytext = pytest.importorskip("jupytext")
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    committed = _read(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in source.cells
    ], f"notebooks/{name}.ipynb differs from notebooks/{name}.py: run `make notebooks`"
    assert committed.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_source_is_a_plain_script(name):
    """``python notebooks/{name}.py`` runs: no magics, no shell escapes, plain Python.

    jupytext writes a cell's magics and ``!`` commands as ``# %...`` / ``# !...`` comments;
    none may appear. What else a notebook alone would provide (``display``, a top-level
    ``await``) fails ``compile`` or ruff's undefined-name check (``make lint``); that the cells
    run is the execution test below (the .py holds exactly the .ipynb's cells).
    """
    source = (NOTEBOOKS / f"{name}.py").read_text()
    compile(source, f"notebooks/{name}.py", "exec")
    escaped = [
        line
        for line in source.splitlines()
        if line.startswith(("# %", "# !", "%", "!")) and not line.startswith("# %%")
    ]
    assert not escaped, f"notebooks/{name}.py: IPython-only lines {escaped}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_opens_with_its_colab_badge(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source
    assert f"]({COLAB.format(name)})" in first.source


# --- the install cell ---------------------------------------------------------------------


def _run_install_cell(name: str, monkeypatch, folder: Path, *, installed: bool) -> list[list[str]]:
    """Run the notebook's first code cell in ``folder``; return the commands it ran."""
    source = _code_cells(_read(name)).pop(0).source
    commands: list[list[str]] = []
    package = importlib.import_module("lucid_jax")

    def run(command: list[str], check: bool) -> None:
        assert check
        commands.append(command)
        monkeypatch.setitem(sys.modules, "lucid_jax", package)  # the next import works

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.chdir(folder)
    if not installed:
        monkeypatch.setitem(sys.modules, "lucid_jax", None)  # `import lucid_jax` fails
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda module, *a: None if module == "lucid_jax" else real_find_spec(module, *a),
        )
    exec(compile(source, f"{name}[install]", "exec"), {})
    return commands


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_installs_a_wheel_beside_the_notebook(name, monkeypatch, tmp_path):
    for version in ("0.0.9", "0.1.0"):
        (tmp_path / f"lucid_jax-{version}-py3-none-any.whl").touch()
    commands = _run_install_cell(name, monkeypatch, tmp_path, installed=False)
    assert commands == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "lucid_jax-0.1.0-py3-none-any.whl[flax]",
        ]
    ]


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_installs_from_the_repository_without_a_wheel(name, monkeypatch, tmp_path):
    commands = _run_install_cell(name, monkeypatch, tmp_path, installed=False)
    assert commands == [[sys.executable, "-m", "pip", "install", "--quiet", PACKAGE]]


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_does_nothing_where_lucid_jax_is_installed(name, monkeypatch, tmp_path):
    (tmp_path / "lucid_jax-0.1.0-py3-none-any.whl").touch()
    assert _run_install_cell(name, monkeypatch, tmp_path, installed=True) == []


# --- execution ----------------------------------------------------------------------------


def _kernel_manager() -> KernelManager:
    """A manager for ipykernel's own ``python3`` spec, which runs this very interpreter.

    ``kernel_dirs=[]`` hides any other ``python3`` kernelspec (a user-level one may point at a
    different Python); the spec left is ipykernel's native one, built from ``sys.executable``.
    """
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    command = manager.format_kernel_cmd()
    assert command[0] == sys.executable, (command, sys.executable)
    return manager


# What each notebook's probe cell saves: name -> Python expression evaluated in the notebook.
RESULTS = {
    "01_quickstart": {
        "seed_input": "input_",
        "seed_output": "out",
        "plain_mean": "plain_mean",
        "plain_var": "plain_var",
        "buffer_mean": "buffer_mean",
        "buffer_var": "buffer_var",
        "x": "x",
        "y": "y",
        "running_mean": "running_mean",
        "running_var": "running_var",
        "pure_running_mean": "result.running_mean",
        "pure_running_var": "result.running_var",
        "y_eval": "y_eval.output",
        "y_vmapped": "y_vmapped",
        "jit_mean": "mean",
        "target": "target",
        "grad_x": "grad_x",
    },
    "02_flax_training": {
        "losses": "losses",
        "y_test": "y_test",
        "logits_train": "logits_train",
        "logits_eval": "logits_eval",
        "scale": "params['norm1']['scale']",
        "bias": "params['norm1']['bias']",
        "running_mean": "batch_stats['norm1']['mean']",
        "running_var": "batch_stats['norm1']['var']",
        "mean_history": "mean_history",
        "batch_conv1_out": "conv1_out",
        "batch_new_mean": "new_mean",
        "batch_new_var": "new_var",
        "test_conv1_train": "conv_train",
        "test_conv1_eval": "conv_eval",
        "test_norm1_train": "norm_train",
        "test_norm1_eval": "norm_eval",
    },
    "03_style_transfer": {
        "content": "content",
        "style": "style",
        "recoloured": "recoloured",
        "stylised": "stylised",
        "loss_history": "loss_history",
    },
}


def _execute(name: str, results_path: Path) -> tuple[nbformat.NotebookNode, dict[str, np.ndarray]]:
    """Run the notebook in a fresh kernel and return it with the results its probe cell saved."""
    notebook = _read(name)
    probe = (
        "import numpy as _np\n"
        f"_np.savez({str(results_path)!r}, **{{key: _np.asarray(eval(expression)) for key, "
        f"expression in {RESULTS[name]!r}.items()}})"
    )
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        notebook,
        km=_kernel_manager(),
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    with np.load(results_path) as saved:
        return notebook, {key: saved[key] for key in saved.files}


def _keep_for_the_docs(name: str, notebook: nbformat.NotebookNode) -> None:
    """Save the executed notebook, less the probe cell, where ``make docs`` renders it from.

    The docs site shows these outputs rather than executing the notebooks again;
    ``make test-notebooks`` names the folder in ``LUCID_JAX_EXECUTED_NOTEBOOKS``; elsewhere
    nothing is written.
    """
    folder = os.environ.get(EXECUTED_NOTEBOOKS)
    if not folder:
        return
    executed = nbformat.from_dict(notebook)
    executed.cells = executed.cells[:-1]
    Path(folder).mkdir(parents=True, exist_ok=True)
    nbformat.write(executed, Path(folder) / f"{name}.ipynb")


def _check_quickstart(r: dict[str, np.ndarray]) -> None:
    # The seed example: plain Tensors as running stats (not updated), weight 1, bias 0.
    seed = r["seed_input"]
    zeros, ones = np.zeros(2), np.ones(2)
    expected, mean, var = reference_instance_norm(seed, zeros, ones, ones, zeros, momentum=0.1)
    np.testing.assert_allclose(r["seed_output"], expected, rtol=1e-6)
    # The plain-array pitfall: plain running stats kept their values; Buffers were updated.
    np.testing.assert_array_equal(r["plain_mean"], zeros)
    np.testing.assert_array_equal(r["plain_var"], ones)
    np.testing.assert_allclose(r["buffer_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(r["buffer_var"], var, rtol=1e-6)

    zeros, ones = np.zeros(3), np.ones(3)
    y, mean, var = reference_instance_norm(r["x"], zeros, ones, training=True, momentum=0.1)
    np.testing.assert_allclose(r["y"], y, atol=1e-4)
    np.testing.assert_allclose(r["running_mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["running_var"], var, rtol=1e-5)
    np.testing.assert_allclose(r["pure_running_mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["pure_running_var"], var, rtol=1e-5)
    y_eval, _, _ = reference_instance_norm(r["x"], mean, var, training=False)
    np.testing.assert_allclose(r["y_eval"], y_eval, atol=1e-4)
    np.testing.assert_allclose(r["y_vmapped"], y, atol=1e-4)
    # 50 jitted steps on one batch: mean_k = (1 - 0.9^k) * batch average of instance means.
    np.testing.assert_allclose(r["jit_mean"], (1 - 0.9**50) * mean / 0.1, rtol=1e-4, atol=1e-6)

    # jax.grad against central differences of the float64 reference, at a few entries.
    x, target = r["x"].astype(np.float64), r["target"].astype(np.float64)

    def loss(x):
        return np.mean((reference_instance_norm(x)[0] - target) ** 2)

    step = 1e-4
    for index in [(0, 0, 0, 0), (3, 1, 7, 9), (7, 2, 15, 15), (5, 0, 8, 2)]:
        bump = np.zeros_like(x)
        bump[index] = step
        numeric = (loss(x + bump) - loss(x - bump)) / (2 * step)
        assert r["grad_x"][index] == pytest.approx(numeric, rel=1e-2, abs=1e-8), index


def _check_flax_training(r: dict[str, np.ndarray]) -> None:
    losses = r["losses"]
    assert np.isfinite(losses).all()
    assert losses[-20:].mean() < 0.25 * losses[:20].mean()
    accuracy = (r["logits_train"].argmax(axis=-1) == r["y_test"]).mean()
    assert accuracy > 0.9, accuracy
    # One training-mode step: Flax's momentum convention, new = 0.9 * old + 0.1 * batch.
    conv1 = r["batch_conv1_out"].astype(np.float64)
    batch_mean = conv1.mean(axis=(1, 2)).mean(axis=0)
    batch_var = conv1.var(axis=(1, 2)).mean(axis=0)
    np.testing.assert_allclose(
        r["batch_new_mean"], 0.9 * r["running_mean"] + 0.1 * batch_mean, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        r["batch_new_var"], 0.9 * r["running_var"] + 0.1 * batch_var, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(r["mean_history"][-1], r["running_mean"])
    # norm1 on the test set: instance statistics in train mode, running statistics in eval mode.
    np.testing.assert_array_equal(r["test_conv1_train"], r["test_conv1_eval"])
    conv1_test = r["test_conv1_train"]
    affine = {"weight": r["scale"], "bias": r["bias"], "channel_axis": -1}
    train, _, _ = reference_instance_norm(conv1_test, **affine)
    evaluated, _, _ = reference_instance_norm(
        conv1_test, r["running_mean"], r["running_var"], training=False, **affine
    )
    np.testing.assert_allclose(r["test_norm1_train"], train, atol=1e-4)
    np.testing.assert_allclose(r["test_norm1_eval"], evaluated, rtol=1e-4, atol=1e-4)
    assert np.abs(train - evaluated).max() > 1e-2  # the modes really differ


def _check_style_transfer(r: dict[str, np.ndarray]) -> None:
    content, style = r["content"].astype(np.float64), r["style"].astype(np.float64)
    assert content.shape[:2] == style.shape[:2] == (1, 3)
    style_mean, style_std = style.mean(axis=(2, 3)), style.std(axis=(2, 3))
    adain, _, _ = reference_instance_norm(content, weight=style_std[0], bias=style_mean[0])
    np.testing.assert_allclose(r["recoloured"], adain, atol=1e-4)
    np.testing.assert_allclose(r["recoloured"].mean(axis=(2, 3)), style_mean, atol=1e-5)
    np.testing.assert_allclose(r["recoloured"].std(axis=(2, 3)), style_std, rtol=1e-3)
    stylised = r["stylised"]
    assert stylised.shape == content.shape and 0.0 <= stylised.min() <= stylised.max() <= 1.0
    assert np.abs(stylised - content).mean() > 0.05  # visibly re-styled
    assert r["loss_history"][-1] < 0.2 * r["loss_history"][0]


CHECKS = {
    "01_quickstart": _check_quickstart,
    "02_flax_training": _check_flax_training,
    "03_style_transfer": _check_style_transfer,
}


@pytest.mark.notebooks
@pytest.mark.long_running
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_computes_what_it_teaches(name, tmp_path):
    for module in REQUIRES.get(name, []):
        pytest.importorskip(module)
    notebook, results = _execute(name, tmp_path / "results.npz")
    outputs = [output for cell in _code_cells(notebook) for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
    # The notebook's own closing asserts ran (its last cell before the probe).
    last = _code_cells(notebook)[-2]
    assert "all checks passed" in "".join(o.get("text", "") for o in last.outputs)
    CHECKS[name](results)
    _keep_for_the_docs(name, notebook)
