"""Samplers and pruners from ``_target_`` configs, with errors a user can act on."""
from __future__ import annotations

import warnings
from typing import Any

import optuna
from omegaconf import OmegaConf

from workbench.sweep.errors import SweepConfigError


def _instantiate(node: Any, what: str, base: type) -> Any:
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise SweepConfigError(f"hydra.sweeper.{what} needs a _target_, got {node!r}")
    from hydra.utils import instantiate

    try:
        with warnings.catch_warnings():  # TPE's group=True, a documented choice, is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            obj = instantiate(node)
    except Exception as exc:  # ImportError, a bad keyword, a bad value
        cause = exc.__cause__ or exc
        raise SweepConfigError(
            f"hydra.sweeper.{what}: cannot build {node['_target_']!r}: {cause}"
        ) from exc
    if not isinstance(obj, base):
        raise SweepConfigError(
            f"hydra.sweeper.{what}: {node['_target_']!r} is not an optuna {base.__name__}"
        )
    return obj


def make_sampler(node: Any) -> optuna.samplers.BaseSampler:
    if not node:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True)
    return _instantiate(node, "sampler", optuna.samplers.BaseSampler)


def make_pruner(node: Any) -> optuna.pruners.BasePruner:
    if not node:
        return optuna.pruners.NopPruner()
    return _instantiate(node, "pruner", optuna.pruners.BasePruner)
