"""What may differ between the members of a population, and what must not.

A population trains P agents as one batched computation. The knobs a sweep searches may differ
per member (``PER_MEMBER``): they become ``[P]`` tensors (booleans as masks) that broadcast over
each member's samples. Everything else shapes the computation itself (network shapes,
``num_envs``, ``num_steps``, ``batch_size``, ``num_mini_epochs``, the env, ...) or is
bookkeeping every member shares, so the members must agree on it; a population that does not is
refused before anything is built, naming the field and the members.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from workbench.agents.ppo.config import PPOAgentConfig

# Dotted paths inside PPOAgentConfig that may differ between members.
PER_MEMBER = (
    "e_clip", "tau", "gamma", "entropy_coef", "gradient_clip_val", "actor_clip_frac_threshold",
    "bounds_loss_coef", "normalized_reward_clamp_value", "task_reward_w", "clip_critic_loss",
    "model.actor.actor_logstd", "model.actor_optimizer.lr", "model.critic_optimizer.lr",
    "advantage_normalization.enabled", "advantage_normalization.shift_mean", "advantage_normalization.use_ema",
    "advantage_normalization.ema_alpha", "advantage_normalization.min_std", "advantage_normalization.clamp_range",
    # budgets: each member counts its own steps
    "training_max_steps", "training_max_iterations", "training_early_termination",
)


class PopulationConfigError(ValueError):
    """Members that disagree on a field they must share."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf paths of a config; a network given as a mapping (any module config) is walked too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping) and value:
        items = list(value.items())
    else:
        return {prefix[:-1]: value}
    out: dict[str, Any] = {}
    for name, item in items:
        out.update(_flatten(item, f"{prefix}{name}."))
    return out


def check_population(configs: Sequence[PPOAgentConfig]) -> None:
    """Refuse members that differ on a shared (structural) field."""
    if not configs:
        raise PopulationConfigError("a population needs at least one member")
    fields = [_flatten(c) for c in configs]
    keys = list(dict.fromkeys(key for f in fields for key in f))  # a key only some members have differs too
    for key in keys:
        if key in PER_MEMBER:
            continue
        first = fields[0].get(key)
        differing = [i for i, f in enumerate(fields) if f.get(key) != first]
        if differing:
            values = ", ".join(f"member {i}: {reprlib.repr(fields[i].get(key))}" for i in [0, *differing][:4])
            raise PopulationConfigError(
                f"population members must share agent.{key}, but they differ ({values}); per member only "
                f"these may differ: {', '.join(PER_MEMBER)}")


def get_path(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


class MemberHyperparams:
    """The per-member knobs as tensors on the agent's device: float64 ``[P]`` values, bool masks."""

    def __init__(self, configs: Sequence[PPOAgentConfig], device: torch.device):
        self.configs = list(configs)
        self.device = device
        self.refresh()

    def refresh(self) -> None:
        self._columns: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        # asked every minibatch; the knobs change only here
        self._uniform: dict[str, bool] = {}
        self._first: dict[str, float] = {}

        def floats(path: str, none: float = math.inf) -> torch.Tensor:
            values = [get_path(c, path) for c in self.configs]
            return torch.tensor([none if v is None else float(v) for v in values], dtype=torch.float64,
                                device=self.device)

        def flags(path: str) -> torch.Tensor:
            return torch.tensor([bool(get_path(c, path)) for c in self.configs], device=self.device)

        self.e_clip = floats("e_clip")
        self.tau = floats("tau")
        self.gamma = floats("gamma")
        self.entropy_coef = floats("entropy_coef")
        self.gradient_clip_val = floats("gradient_clip_val")
        self.clip_frac_threshold = floats("actor_clip_frac_threshold")  # None: never skip
        self.bounds_loss_coef = floats("bounds_loss_coef")
        self.reward_clamp = floats("normalized_reward_clamp_value")
        self.task_reward_w = floats("task_reward_w")
        self.clip_critic_loss = flags("clip_critic_loss")
        self.actor_logstd = [float(get_path(c, "model.actor.actor_logstd")) for c in self.configs]
        self.actor_lr = floats("model.actor_optimizer.lr")
        self.critic_lr = floats("model.critic_optimizer.lr")
        adv = "advantage_normalization."
        self.adv_enabled = flags(adv + "enabled")
        self.adv_shift_mean = flags(adv + "shift_mean")
        self.adv_use_ema = flags(adv + "use_ema")
        self.adv_ema_alpha = floats(adv + "ema_alpha")
        self.adv_min_std = floats(adv + "min_std")
        self.adv_clamp_range = floats(adv + "clamp_range")

    def replace(self, member: int, config: PPOAgentConfig) -> None:
        """A new member in slot ``member`` brings its own knobs (structure checked by the caller)."""
        self.configs[member] = config
        self.refresh()

    def column(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``name`` as [P, 1] in ``dtype``: broadcasts over each member's samples (made once)."""
        key = (name, dtype)
        if key not in self._columns:
            self._columns[key] = getattr(self, name).to(dtype).unsqueeze(1)
        return self._columns[key]

    def knob(self, name: str, dtype: torch.dtype = torch.float32) -> float | torch.Tensor:
        """``name`` as a Python float when every member has the same value (the ops, and their
        rounding, are then exactly a single run's), else as a [P, 1] column."""
        if self.uniform(name):
            if name not in self._first:
                self._first[name] = float(getattr(self, name)[0])
            return self._first[name]
        return self.column(name, dtype)

    def uniform(self, name: str) -> bool:
        """True when every member has the same value (a single-agent fast path may apply)."""
        if name not in self._uniform:
            values = getattr(self, name)
            self._uniform[name] = bool((values == values[0]).all())
        return self._uniform[name]
