"""The analysis notebooks: committed without outputs, public API only, and they run headless."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from sweep_fixture import REPO, real_sweep  # noqa: F401 - the session fixture
from workbench import analysis

NOTEBOOKS = REPO / "notebooks"
NAMES = ["sweep_analysis", "run_diagnostics"]


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, cell["source"]
    nbformat.validate(read(name))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_has_a_parameters_cell_read_from_the_environment(name):
    cells = [c for c in read(name).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1 and cells[0].cell_type == "code"
    assert "os.environ.get(\"WORKBENCH_" in cells[0].source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_uses_only_the_public_analysis_api(name):
    public = set(analysis.__all__)
    for cell in read(name).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("workbench") for a in node.names), ast.unparse(node)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench"):
                assert node.module == "workbench" and [a.name for a in node.names] == ["analysis"], ast.unparse(node)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "wa":
                assert node.attr in public, f"wa.{node.attr} is not in workbench.analysis.__all__"


def execute(name: str, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = read(name)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the cell if any cell errors
    printed = "\n".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    # tqdm.auto (optuna imports it) finds no ipywidgets in a kernel: pyproject's notebooks extra has it
    assert "TqdmWarning" not in printed and "IProgress not found" not in printed, printed[:2000]
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> tuple[int, str]:
    """(number of PNG images, all text the notebook printed or displayed)."""
    images, text = 0, []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            data = out.get("data", {})
            images += "image/png" in data
            text.append(out.get("text", "") + data.get("text/plain", "") + data.get("text/html", ""))
    return images, "\n".join(text)


@pytest.mark.slow
def test_sweep_analysis_runs_on_the_latest_local_sweep(real_sweep, monkeypatch):  # noqa: F811
    # only where to look: the notebook finds the study itself (its default)
    env = {"WORKBENCH_ROOT": str(real_sweep.root), "WORKBENCH_STORAGE": "", "WORKBENCH_STUDY": ""}
    notebook = execute("sweep_analysis", {**env, "WANDB_MODE": "offline"}, monkeypatch)
    images, text = outputs(notebook)
    assert images == 6  # knobs, importances, parallel coordinates, curves, best/worst, pruning
    assert f"study {real_sweep.study} on {real_sweep.storage}: 6 trials" in text
    assert "histories for 6 of 6 trials" in text


@pytest.mark.slow
def test_sweep_analysis_runs_on_a_named_study(real_sweep, monkeypatch):  # noqa: F811
    env = {"WORKBENCH_STORAGE": real_sweep.storage, "WORKBENCH_STUDY": real_sweep.study,
           "WORKBENCH_ROOT": "/nonexistent"}
    images, text = outputs(execute("sweep_analysis", env, monkeypatch))
    assert images == 6 and "best trial" in text


@pytest.mark.slow
def test_run_diagnostics_runs_on_a_trial_run(real_sweep, monkeypatch):  # noqa: F811
    run_dir = sorted((real_sweep.root / "multirun" / real_sweep.study / "0" / "wandb").glob("offline-run-*"))[0]
    notebook = execute("run_diagnostics", {"WORKBENCH_RUN": str(run_dir)}, monkeypatch)
    images, text = outputs(notebook)
    assert images == 7  # losses, clipping, grad norms, actor/critic layers, adv_norm, evaluation
    assert run_dir.name.rsplit("-", 1)[-1] in text  # the run id in the summary table
    assert "adv_norm/raw_std" in text and "critic/grad_norm_before_clip" in text  # the describe() table


@pytest.mark.slow
def test_run_diagnostics_defaults_to_the_latest_run(real_sweep, monkeypatch):  # noqa: F811
    notebook = execute("run_diagnostics", {"WORKBENCH_RUN": "", "WORKBENCH_ROOT": str(real_sweep.root)},
                       monkeypatch)
    images, text = outputs(notebook)
    latest = analysis.latest_run(real_sweep.root)
    assert images == 7 and latest.name.rsplit("-", 1)[-1] in text  # its run id


@pytest.mark.slow
def test_sweep_analysis_shows_the_pareto_front_of_a_multi_objective_study(tmp_path, monkeypatch):
    from test_sweep_multiobjective import brute_force_front, random_study

    study = random_study(tmp_path)
    expected = brute_force_front(study.get_trials(deepcopy=False), ["maximize", "minimize"])
    env = {"WORKBENCH_STORAGE": str(tmp_path / "sweeps_db" / "mo.journal"), "WORKBENCH_STUDY": "mo",
           "WORKBENCH_ROOT": "/nonexistent"}
    notebook = execute("sweep_analysis", env, monkeypatch)
    front_cell = next(c for c in notebook.cells if c.source == "wa.pareto_front(trials)")
    table = front_cell.outputs[0]["data"]["text/html"]  # rows: <th>index</th><td>trial number</td>...
    shown = {int(n) for n in re.findall(r"<tr>\s*<th>\d+</th>\s*<td>(\d+)</td>", table)}
    assert shown == expected
    plot_cell = next(c for c in notebook.cells if "wa.plot_pareto_front" in c.source)
    assert any("image/png" in out.get("data", {}) for out in plot_cell.outputs)
