"""Bad input through the real `workbench train` command: one clear error, non-zero exit, nothing written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, workbench_env

CASES = [
    ("agent.e_clip=-0.1", "agent.e_clip=-0.1 is not allowed: must be > 0"),
    ("agent.e_clip=0", "agent.e_clip=0.0 is not allowed: must be > 0"),
    ("agent.tau=1.5", "agent.tau=1.5 is not allowed: must be in [0, 1]"),
    ("agent.gamma=-0.01", "agent.gamma=-0.01 is not allowed: must be in [0, 1]"),
    ("agent.advantage_normalization.min_std=0", "agent.advantage_normalization.min_std=0.0 is not allowed: must be > 0"),
    ("agent.batch_size=1000", "must divide env.num_envs x agent.num_steps = 1024 x 32 = 32768"),
    ("device=tpu", "device='tpu' is not allowed: must be one of cpu, cuda, auto"),
    ("env=nope", "Could not find 'env/nope'"),
    ("agent.foo=1", "Key 'foo' not in 'PPOAgentConfig'"),
    ("agent.e_clip=abc", "Value 'abc' of type 'str' could not be converted to Float"),
    ("agent.num_steps=2.5", "agent.num_steps"),
    ("env.bogus_knob=3", "bogus_knob"),
    ("checkpoint=/nonexistent/last.ckpt", "does not exist"),
]


def run_train(tmp_path, *overrides):
    return subprocess.run([sys.executable, "-m", "workbench.cli", "train", *overrides,
                           f"hydra.run.dir={tmp_path / 'run'}", "logger.mode=disabled"],
                          cwd=tmp_path, env=workbench_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, message", CASES)
def test_bad_value_is_refused_before_anything_is_written(tmp_path, override, message):
    proc = run_train(tmp_path, override)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists(), "a refused run left files behind"
    assert not list(tmp_path.rglob("*.ckpt"))


def test_help_lists_subcommands():
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    for command in ("train", "sweep", "runs", "report"):
        assert command in proc.stdout


def test_unknown_subcommand_fails(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "trian"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr
