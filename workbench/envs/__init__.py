"""Batched environments and ``make_env``, which builds one from a Hydra ``env`` node.

The node is a plain mapping: ``_target_`` (import path of the env class) plus the
constructor's keyword arguments. ``device`` and ``seed`` (and ``member_seeds`` for a
population) come from the agent, never from the yaml. The node is checked before anything
is built, so a typo fails fast with a message that names it.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch

from workbench.envs.base import BatchedEnv, StepResult, as_env_ids
from workbench.envs.population import PopulationEnv, supports_members

__all__ = ["BatchedEnv", "EnvConfigError", "PopulationEnv", "StepResult", "as_env_ids", "make_env",
           "resolve_env_class"]

# Supplied by make_env's caller, so not allowed in the config node.
_CALLER_KWARGS = ("device", "seed", "member_seeds")


class EnvConfigError(ValueError):
    """An ``env`` config node that cannot build an environment."""


def resolve_env_class(target: str) -> type:
    """Import the class named by a ``_target_`` path such as ``workbench.envs.pendulum.Pendulum``."""
    module_name, _, class_name = str(target).rpartition(".")
    if not module_name:
        raise EnvConfigError(f"env _target_ {target!r} is not an import path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EnvConfigError(f"env _target_ {target!r}: cannot import module {module_name!r} ({error})") from error
    env_class = getattr(module, class_name, None)
    if not inspect.isclass(env_class):
        raise EnvConfigError(f"env _target_ {target!r}: module {module_name!r} has no class {class_name!r}")
    return env_class


def _check_kwargs(target: str, env_class: type, kwargs: Mapping[str, Any]) -> None:
    parameters = inspect.signature(env_class).parameters
    allowed = sorted(name for name in parameters if name not in _CALLER_KWARGS and name != "self")
    for key in kwargs:
        if key in _CALLER_KWARGS:
            raise EnvConfigError(f"env config for {target}: {key!r} is set by the agent, remove it from the env config")
        if key not in parameters:
            raise EnvConfigError(f"env config for {target}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    num_envs = kwargs.get("num_envs", parameters["num_envs"].default if "num_envs" in parameters else 1)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise EnvConfigError(f"env config for {target}: num_envs must be an integer >= 1, got {num_envs!r}")


def _check_member_seeds(target: str, member_seeds: Any) -> list[int]:
    if (not isinstance(member_seeds, (list, tuple)) or not member_seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in member_seeds)):
        raise EnvConfigError(f"env {target}: member_seeds must be a non-empty list of ints, got {member_seeds!r}")
    return list(member_seeds)


def make_env(env_cfg: Mapping[str, Any], *, device: str | torch.device, seed: int,
             member_seeds: list[int] | None = None) -> BatchedEnv:
    """Build the env described by ``env_cfg`` (``_target_`` + constructor kwargs) on ``device``.

    With ``member_seeds`` (P seeds) the env holds a population: P x ``num_envs`` sub-envs,
    member i's behaving as the single env built with ``seed=member_seeds[i]`` (``seed`` is
    then unused). Classes whose constructor takes ``member_seeds`` build it natively; any
    other class is wrapped in a ``PopulationEnv`` of P single envs.
    """
    if "_target_" not in env_cfg:
        raise EnvConfigError(f"env config needs a '_target_' key (the env class import path), got keys {sorted(env_cfg)}")
    # Copy into plain Python values: OmegaConf nodes must not leak into the env.
    kwargs = {str(key): _to_plain(value) for key, value in env_cfg.items()}
    target = kwargs.pop("_target_")
    env_class = resolve_env_class(target)
    _check_kwargs(target, env_class, kwargs)
    if member_seeds is None:
        return env_class(**kwargs, device=device, seed=seed)
    seeds = _check_member_seeds(target, member_seeds)
    if supports_members(env_class):
        return env_class(**kwargs, device=device, seed=seeds[0], member_seeds=seeds)
    return PopulationEnv(lambda member_seed: env_class(**kwargs, device=device, seed=member_seed), seeds)


def _to_plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
