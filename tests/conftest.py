"""Shared fixtures: isolate W&B and Hydra outputs in temp dirs, compose configs in-process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from workbench.config import register_configs

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO / "conf")

# A pendulum run small enough for unit-level tests: 64 envs x 16 steps, 4 minibatches of 256.
TINY = [
    "env.num_envs=64", "agent.num_steps=16", "agent.batch_size=256", "agent.num_mini_epochs=2",
    "agent.training_max_steps=8192", "agent.evaluator.eval_metrics_every=4", "agent.evaluator.max_eval_steps=50",
    "agent.evaluator.num_envs=8", "torch_threads=1",
]


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(base / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture
def tiny_config():
    def make(*extra: str) -> DictConfig:
        return compose_config(TINY + list(extra))
    return make


def workbench_env() -> dict[str, str]:
    """Environment for subprocesses running the CLI (single-threaded, quiet W&B)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"})
    return env


@pytest.fixture(autouse=True)
def restore_logging():
    """An in-process Hydra app points loggers' handlers at a test's captured stream; later tests
    would log into a closed stream ("--- Logging error ---"): put every logger's handlers back."""
    import logging

    def loggers():
        found = [logging.getLogger()]
        found += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        return found

    before = {id(lg): (list(lg.handlers), lg.level) for lg in loggers()}
    yield
    for logger in loggers():
        handlers, level = before.get(id(logger), ([], logger.level))
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
