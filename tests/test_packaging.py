"""A non-editable install works from an empty directory: the wheel ships conf/ and sweeps/,
and the user's own ./sweeps/ are found. The wheel is built without dependencies or build
isolation and unpacked (what `pip install .` puts in site-packages); the dependencies come
from this interpreter's environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TINY = ["env.num_envs=64", "agent.batch_size=1024", "agent.training_max_steps=4096",
        "agent.evaluator.num_envs=8", "agent.evaluator.max_eval_steps=20", "torch_threads=1"]
USER_SWEEP = """\
# @package _global_
defaults:
  - override /hydra/sweeper: workbench_optuna
hydra:
  sweeper:
    n_trials: 1
    params:
      agent.e_clip: interval(0.1, 0.3)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("workbench-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "workbench/conf/config.yaml" in names and "workbench/conf/sweep/smoke.yaml" in names
    assert "workbench/conf/network/tanh_64x64.yaml" in names and "workbench/conf/search_space/ppo_knobs.yaml" in names
    assert "workbench/py.typed" in names
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update({"PYTHONPATH": str(site), "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"})
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)


def test_installed_workbench_trains_from_an_empty_directory(installed: Path, tmp_path: Path):
    where = run_installed(installed, tmp_path, "train", "--cfg", "job")  # composes from the wheel's conf/
    assert where.returncode == 0, where.stderr[-3000:]
    done = run_installed(installed, tmp_path, "train", *TINY, "hydra.run.dir=run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "last.ckpt").is_file()
    probe = subprocess.run([sys.executable, "-c", "import workbench; print(workbench.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(installed))  # the wheel's code ran, not the checkout's


def test_installed_workbench_sweeps_packaged_and_user_sweep_files(installed: Path, tmp_path: Path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(USER_SWEEP)
    mine = run_installed(installed, tmp_path, "sweep", "mine", *TINY)
    assert mine.returncode == 0, mine.stderr[-3000:]
    assert (tmp_path / "multirun" / "mine" / "0" / "last.ckpt").is_file()
    smoke = run_installed(installed, tmp_path, "sweep", "smoke", "--n-trials", "1", *TINY,
                          "agent.evaluator.eval_metrics_every=2", "hydra.sweeper.objective.report_every=2")
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (tmp_path / "sweeps_db" / "smoke.summary.csv").is_file()


def test_installed_configs_compose_as_the_snapshots(installed: Path, tmp_path: Path):
    """The wheel's copy of conf/ (its sweep link followed, the network and search-space groups
    with it) composes every case of tests/composed_configs.py to its snapshot."""
    script = ("import json, sys; sys.path.append(sys.argv[1])\n"
              "from composed_configs import CASES, composed_text\n"
              "from workbench.packaged import CONF_DIR\n"
              "print(json.dumps({'conf': CONF_DIR, 'cases': {n: composed_text(CONF_DIR, o) for n, o in CASES.items()}}))")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", script, str(REPO / "tests")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["conf"].startswith(str(installed))
    snapshots = REPO / "tests" / "data" / "composed"
    for name, text in out["cases"].items():
        assert text == (snapshots / f"{name}.yaml").read_text(), name
