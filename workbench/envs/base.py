"""The batched environment protocol every workbench environment implements.

All environments step ``num_envs`` copies at once and speak torch: observations
are a TensorDict of ``[num_envs, ...]`` tensors, rewards and flags are
``[num_envs]`` tensors on the environment's device.

Episode ends come in two kinds, kept apart because GAE treats them differently:
``terminated`` marks a true terminal state (no bootstrap), ``truncated`` marks a
time limit or curriculum cut (bootstrapped from the value of the final state).
``step`` returns the post-step, *pre-reset* observation; resets are lazy: the
agent calls ``reset(done_ids)`` at the start of the next step, as ProtoMotions does.

An env may hold a population (``workbench.envs.population``): ``num_members`` members of
``member_num_envs`` envs each, member-major, so ``num_envs = num_members * member_num_envs``.
A single env has ``num_members = 1``; readers use ``getattr(env, "num_members", 1)`` so envs
written before populations still work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from tensordict import TensorDict


@dataclass
class StepResult:
    obs: TensorDict
    reward: torch.Tensor  # [N] float32
    terminated: torch.Tensor  # [N] bool: true terminal state
    truncated: torch.Tensor  # [N] bool: time limit, not terminal
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated


@runtime_checkable
class BatchedEnv(Protocol):
    num_envs: int
    action_dim: int
    device: torch.device
    max_episode_length: int  # mutable: the episode-length curriculum assigns it
    dt: float
    num_members: int  # members of a population; 1 for a single env
    member_num_envs: int  # envs per member; num_envs for a single env

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        """Reset the listed envs (None = all, empty = none); return obs of all envs."""

    def step(self, action: torch.Tensor) -> StepResult:
        """Advance every env by one step with ``action`` of shape [N, action_dim]."""

    def get_obs(self) -> TensorDict:
        """Current observations of all envs."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the agent after each training iteration."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def close(self) -> None: ...


def as_env_ids(env_ids: torch.Tensor | None, num_envs: int, device: torch.device) -> torch.Tensor:
    """Normalise a reset request to a long tensor of env indices."""
    if env_ids is None:
        return torch.arange(num_envs, device=device)
    return env_ids.to(device=device, dtype=torch.long).reshape(-1)
