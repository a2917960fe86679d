"""Batched environments and ``make_env``, which builds one from a Hydra ``env`` node.

The node is a plain mapping: ``_target_`` (import path of the env class) plus the
constructor's keyword arguments. ``device`` and ``seed`` (and ``member_seeds`` for a
population) come from the agent, never from the yaml. The node is checked before anything
is built, so a typo fails fast with a message that names it.
"""
from __future__ import annotations

import importlib
import inspect
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

import torch

from workbench.envs.base import BatchedEnv, StepResult, as_env_ids
from workbench.envs.population import PopulationEnv, supports_members

__all__ = ["BatchedEnv", "EnvConfigError", "PopulationEnv", "StepResult", "as_env_ids", "check_env_config", "make_env",
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


# Value rules for constructor arguments that many envs share, by name (types come from the signature).
_VALUE_RULES = {
    "num_envs": (lambda v: v >= 1, "must be >= 1"),
    "max_episode_length": (lambda v: v >= 1, "must be >= 1"),
    "dt": (lambda v: v > 0, "must be > 0 (a time step in seconds)"),
    "substeps": (lambda v: v >= 1, "must be >= 1"),
}


def _refuse(key: str, value: Any, allowed: str, target: str) -> EnvConfigError:
    return EnvConfigError(f"env.{key}={value!r} is not allowed: {allowed} (env {target})")


def _check_kwargs(target: str, env_class: type, kwargs: Mapping[str, Any]) -> None:
    parameters = inspect.signature(env_class).parameters
    allowed = sorted(name for name in parameters if name not in _CALLER_KWARGS and name != "self")
    for key in kwargs:
        if key in _CALLER_KWARGS:
            raise EnvConfigError(f"env config for {target}: {key!r} is set by the agent, remove it from the env config")
        if key not in parameters:
            raise EnvConfigError(f"env config for {target}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    hints = _type_hints(env_class)
    for name, parameter in parameters.items():
        if name in _CALLER_KWARGS or name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                                          parameter.VAR_KEYWORD):
            continue
        if name not in kwargs and parameter.default is inspect.Parameter.empty:
            raise _refuse(name, "???", "a value is required", target)
        value = kwargs.get(name, parameter.default)
        expected = hints.get(name, _type_of_default(parameter.default))
        if not _matches(value, expected):
            raise _refuse(name, value, f"must be {_describe(expected)}", target)
        rule = _VALUE_RULES.get(name)
        if rule is not None and value is not None and not rule[0](value):
            raise _refuse(name, value, rule[1], target)


def _check_member_seeds(target: str, member_seeds: Any) -> list[int]:
    if (not isinstance(member_seeds, (list, tuple)) or not member_seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in member_seeds)):
        raise EnvConfigError(f"env {target}: member_seeds must be a non-empty list of ints, got {member_seeds!r}")
    return list(member_seeds)



def _type_hints(env_class: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(env_class.__init__)
    except Exception:  # an annotation that cannot be evaluated: fall back to the defaults' types
        return {}


def _type_of_default(default: Any) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return Any
    return type(default)


def _matches(value: Any, expected: Any) -> bool:
    """Whether a config value fits a constructor annotation (YAML values: no coercion but int -> float)."""
    if expected is Any or expected is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:  # numbers.Integral: numpy integers are fine too
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    target = origin or expected
    return not inspect.isclass(target) or isinstance(value, target)


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(member) for member in typing.get_args(expected))
    if expected is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    target = origin or expected
    return names.get(target, f"a {getattr(target, '__name__', target)}")


def check_env_config(env_cfg: Mapping[str, Any]) -> type:
    """Check an ``env`` node without building anything: the class imports, every key is a
    constructor argument, every value has the argument's type and passes its rule.
    Returns the env class."""
    if not isinstance(env_cfg, Mapping):
        raise EnvConfigError(f"env={env_cfg!r} is not allowed: must be an env config (pick one with env=<name>)")
    if "_target_" not in env_cfg:
        raise EnvConfigError(f"env config needs a '_target_' key (the env class import path), got keys {sorted(env_cfg)}")
    kwargs = {str(key): _to_plain(value) for key, value in env_cfg.items()}
    target = kwargs.pop("_target_")
    env_class = resolve_env_class(target)
    _check_kwargs(target, env_class, kwargs)
    return env_class


def make_env(env_cfg: Mapping[str, Any], *, device: str | torch.device, seed: int,
             member_seeds: list[int] | None = None) -> BatchedEnv:
    """Build the env described by ``env_cfg`` (``_target_`` + constructor kwargs) on ``device``.

    With ``member_seeds`` (P seeds) the env holds a population: P x ``num_envs`` sub-envs,
    member i's behaving as the single env built with ``seed=member_seeds[i]`` (``seed`` is
    then unused). Classes whose constructor takes ``member_seeds`` build it natively; any
    other class is wrapped in a ``PopulationEnv`` of P single envs.
    """
    env_class = check_env_config(env_cfg)
    # Copy into plain Python values: OmegaConf nodes must not leak into the env.
    kwargs = {str(key): _to_plain(value) for key, value in env_cfg.items() if key != "_target_"}
    if member_seeds is None:
        return env_class(**kwargs, device=device, seed=seed)
    seeds = _check_member_seeds(str(env_cfg["_target_"]), member_seeds)
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
