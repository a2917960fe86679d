"""Compose the workbench's Hydra config in-process and build our PPO agent from it."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from workbench.config import register_configs
from workbench.train import build_agent

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_config(overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=["logger.mode=disabled", *overrides])


def build_ours(overrides: list[str], with_evaluator: bool = False):
    """Our PPO agent for ``overrides`` (no output dir: no checkpoints; no evaluator unless asked)."""
    agent = build_agent(compose_config(overrides), None)
    if not with_evaluator:
        agent.evaluator = None
    return agent
