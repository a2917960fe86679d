"""PPO actor-critic as TensorDict modules.

``PPOActor`` samples ``action ~ Normal(mu, exp(logstd))`` (no tanh, no clipping)
and writes ``action``, ``mean_action`` and ``neglogp``; ``PPOModel`` runs the actor
and then the critic, adding ``value`` ([P, B, 1]).

Both carry the population's member dimension: every tensor is ``[P, batch, ...]``, every
parameter a stack of P (stacked.py). The actor draws member p's noise from ``generators[p]``,
so a member's actions do not depend on how many members run beside it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from workbench.agents.common.base_model import BaseModel
from workbench.agents.common.config import ModuleContainerConfig
from workbench.agents.common.modules import build_module
from workbench.agents.ppo.config import PPOActorConfig, PPOModelConfig

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_neglogp(x: torch.Tensor, mu: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """-log N(x | mu, exp(logstd)), summed over the last dim."""
    z = (x - mu) * torch.exp(-logstd)
    return (0.5 * z.square() + logstd + HALF_LOG_2PI).sum(-1)


class PPOActor(TensorDictModuleBase):
    def __init__(self, config: PPOActorConfig, num_members: int = 1, actor_logstd: Sequence[float] | None = None):
        super().__init__()
        missing = {"action", "mean_action", "neglogp"} - set(config.out_keys)
        if missing:
            raise ValueError(f"PPOActor out_keys must include {sorted(missing)}")
        if config.num_out is None:
            raise ValueError("PPOActor needs num_out (the action dimension)")
        self.config = config
        self.in_keys = list(config.in_keys)
        self.out_keys = list(config.out_keys)
        self.mu_key = config.mu_key
        self.num_members = num_members
        self.mu = build_module(config.mu_model, num_members, default=ModuleContainerConfig)
        # member p's initial log std; a sweep may give each member its own
        values = list(actor_logstd) if actor_logstd is not None else [float(config.actor_logstd)] * num_members
        logstd = torch.tensor(values, dtype=torch.float32).unsqueeze(1).repeat(1, config.num_out)
        self.logstd = nn.Parameter(logstd, requires_grad=config.learnable_std)
        self.generators: Sequence[torch.Generator] | None = None  # None: the global generator

    def distribution(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Action mean and (broadcast) log std for the observations in ``td`` ([P, B] or a
        member-major [P * B] batch)."""
        mu = self.mu(td).get(self.mu_key)
        if self.num_members == 1:
            return mu, self.logstd.expand_as(mu) if mu.dim() == 2 else self.logstd.unsqueeze(1).expand_as(mu)
        per_member = self.logstd.unsqueeze(1).expand(self.num_members, mu.numel() // mu.shape[-1] // self.num_members,
                                                     mu.shape[-1])
        return mu, per_member.reshape(mu.shape)

    def sample_noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like`` (members first), member p's from its own
        generator. With several generators and autograd off, the tensor is a buffer the next call
        overwrites (with autograd on, a graph may keep it, so each call draws into a fresh one)."""
        if self.generators is None:
            return torch.randn_like(like)
        if len(self.generators) == 1:
            return torch.randn(like.shape, generator=self.generators[0], device=like.device, dtype=like.dtype)
        noise, rows = self._noise_buffer(like)
        # normal_ in place draws what randn would, with less call overhead
        for row, generator in zip(rows, self.generators):
            row.normal_(generator=generator)
        return noise

    def _noise_buffer(self, like: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A noise tensor shaped like ``like`` and its P member rows. Without autograd they are made
        once per shape: the rollout draws every step, and a fresh tensor and its P views cost more
        than the draws; ``forward`` uses the tensor only to compute its outputs."""
        reuse = not torch.is_grad_enabled()
        key = (like.shape, like.dtype, like.device, len(self.generators))
        cached = self.__dict__.get("_noise")
        if reuse and cached is not None and cached[0] == key:
            return cached[1]
        noise = torch.empty_like(like)
        made = noise, noise.view(len(self.generators), -1).unbind(0)
        if reuse:
            self.__dict__["_noise"] = (key, made)
        return made

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        mu, logstd = self.distribution(td)
        noise = self.sample_noise(mu)
        td.set("action", torch.addcmul(mu, torch.exp(logstd), noise))
        td.set("mean_action", mu)
        # (action - mu) / std is the noise itself: gaussian_neglogp without recomputing it
        td.set("neglogp", (0.5 * noise.square() + logstd + HALF_LOG_2PI).sum(-1))
        return td


class PPOModel(BaseModel):
    def __init__(self, config: PPOModelConfig, num_members: int = 1, actor_logstd: Sequence[float] | None = None):
        super().__init__(config)
        self.num_members = num_members
        self._actor = PPOActor(config.actor, num_members, actor_logstd)
        self._critic = build_module(config.critic, num_members, default=ModuleContainerConfig)
        needed_in = set(self._actor.in_keys) | set(self._critic.in_keys)
        if not needed_in <= set(self.in_keys):
            raise ValueError(f"actor/critic read {sorted(needed_in - set(self.in_keys))}, "
                             f"which are not in the model's in_keys {self.in_keys}")
        produced = set(self._actor.out_keys) | set(self._critic.out_keys)
        if not produced <= set(self.out_keys):
            raise ValueError(f"actor/critic write {sorted(produced - set(self.out_keys))}, "
                             f"which are not in the model's out_keys {self.out_keys}")

    @property
    def actor(self) -> PPOActor:
        return self._actor

    @property
    def critic(self) -> TensorDictModuleBase:
        return self._critic

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        return self._critic(self._actor(td))

