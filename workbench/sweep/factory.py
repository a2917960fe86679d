"""Samplers and pruners from ``_target_`` configs, with errors a user can act on."""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Iterable

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


# `workbench sweep` numbers its worker processes in this variable (0, 1, ...)
ENV_WORKER = "WORKBENCH_SWEEP_WORKER"


def worker_seed(seed: int, worker: int) -> int:
    """A seed of its own for each worker process, derived from the sweep file's fixed one:
    worker 0 keeps it, so a one-worker sweep samples exactly as the file says."""
    if worker == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, worker]).generate_state(1)[0])


def seed_sampler_for_worker(node: Any, worker: int | None) -> tuple[Any, str | None]:
    """The sampler config with a per-worker seed, and the line saying so (None: unchanged).
    Without it every worker of a fixed-seed sampler proposes the same parameters."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not worker or not isinstance(node, dict) or node.get("seed") is None:
        return node, None
    seed = int(node["seed"])
    derived = worker_seed(seed, worker)
    note = (f"worker {worker}: sampler seed {derived}, derived from the fixed hydra.sweeper.sampler.seed "
            f"{seed} (worker 0 uses {seed}), so workers do not propose the same parameters")
    return {**node, "seed": derived}, note


def _lazy_modules(obj: Any) -> list[str]:
    """Modules that the object's own module imports only on first use (Optuna's _LazyImport):
    CMA-ES needs `cmaes` only once its start-up trials are done, far into a sweep."""
    from optuna._imports import _LazyImport

    namespace = vars(sys.modules[type(obj).__module__])
    return sorted({value._name for value in namespace.values() if isinstance(value, _LazyImport)})


def check_sampler(sampler: optuna.samplers.BaseSampler, searched: Iterable[str]) -> None:
    """Refuse, before any trial, a sampler that would fail later: a missing optional
    dependency, or a grid without some searched parameter."""
    name = type(sampler).__name__
    for module in _lazy_modules(sampler):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SweepConfigError(
                f"hydra.sweeper.sampler: {name} needs the module {module!r}, which cannot be imported "
                f"({exc}); install it (pip install {module.split('.')[0]}) or choose another sampler"
            ) from exc
    if isinstance(sampler, optuna.samplers.GridSampler):
        grid = set(sampler._search_space)  # no public accessor
        missing = [param for param in searched if param not in grid]
        if missing:
            raise SweepConfigError(
                f"hydra.sweeper.sampler.search_space: the grid has no values for {', '.join(missing)}; "
                f"a GridSampler needs every searched parameter (it has {', '.join(sorted(grid)) or 'none'})"
            )


def _unwrapped(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    wrapped = getattr(pruner, "_wrapped_pruner", None)  # PatientPruner
    return _unwrapped(wrapped) if wrapped is not None else pruner


def is_wilcoxon(pruner: optuna.pruners.BasePruner) -> bool:
    return isinstance(_unwrapped(pruner), optuna.pruners.WilcoxonPruner)


def check_pruner(pruner: optuna.pruners.BasePruner, seeds: Any) -> None:
    """The Wilcoxon pruner compares trials instance by instance: per-iteration reports
    (steps = iterations) would make it compare unrelated numbers."""
    if isinstance(_unwrapped(pruner), optuna.pruners.WilcoxonPruner) and not seeds:
        raise SweepConfigError(
            "hydra.sweeper.pruner: WilcoxonPruner needs per-seed objectives (one value per seed, "
            "step = seed index): set hydra.sweeper.objective.seeds, e.g. [0, 1, 2, 3, 4] (population "
            "sweeps will train those seeds side by side), or choose another pruner"
        )
