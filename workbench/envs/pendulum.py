"""Pendulum swing-up, batched in torch.

Dynamics, reward and limits follow Gymnasium's Pendulum-v1 (g=10, m=l=1,
dt=0.05, |torque|<=2, |speed|<=8, 200-step episodes) so returns are comparable:
a random policy scores about -1200, a good one about -150. The policy acts in
[-1, 1] (scaled to the torque range); actions outside are clipped by the env,
never by the agent. Episodes only end by time limit, so every end is a truncation.

With ``member_seeds`` it holds a population (``workbench.envs.population``): ``num_envs``
envs per member, each member's reset draws from its own generator.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from workbench.envs.base import StepResult, as_env_ids
from workbench.envs.population import TorchMembers


class Pendulum(TorchMembers):
    max_speed = 8.0
    max_torque = 2.0
    gravity = 10.0
    mass = 1.0
    length = 1.0
    state_names = ("theta", "theta_dot", "progress")

    def __init__(self, num_envs: int = 1024, max_episode_length: int = 200, dt: float = 0.05,
                 device: str | torch.device = "cpu", seed: int = 0, member_seeds: Sequence[int] | None = None):
        self.device = torch.device(device)
        self._init_members(num_envs, seed, member_seeds)  # self.num_envs: all members' envs
        self.action_dim = 1
        self.obs_dim = 3
        self.max_episode_length = max_episode_length
        self.dt = dt
        self.theta = torch.zeros(self.num_envs, device=self.device)
        self.theta_dot = torch.zeros(self.num_envs, device=self.device)
        self.progress = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.reset()

    def _uniform(self, generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=self.device)
        return low + (high - low) * u

    def _reset_draws(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._uniform(generator, n, -math.pi, math.pi), self._uniform(generator, n, -1.0, 1.0)

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        ids = as_env_ids(env_ids, self.num_envs, self.device)
        if ids.numel():
            ids, (theta, theta_dot) = self.draw_reset(ids, self._reset_draws)
            self.theta[ids], self.theta_dot[ids] = theta, theta_dot
            self.progress[ids] = 0
        return self.get_obs()

    def get_obs(self) -> TensorDict:
        obs = torch.stack((self.theta.cos(), self.theta.sin(), self.theta_dot), dim=-1)
        return TensorDict({"obs": obs}, batch_size=[self.num_envs], device=self.device)

    def step(self, action: torch.Tensor) -> StepResult:
        torque = action[:, 0].clamp(-1.0, 1.0) * self.max_torque
        angle = torch.remainder(self.theta + math.pi, 2 * math.pi) - math.pi
        cost = angle.square() + 0.1 * self.theta_dot.square() + 0.001 * torque.square()

        accel = 3 * self.gravity / (2 * self.length) * self.theta.sin() + 3.0 / (self.mass * self.length**2) * torque
        self.theta_dot = (self.theta_dot + accel * self.dt).clamp(-self.max_speed, self.max_speed)
        self.theta = self.theta + self.theta_dot * self.dt
        self.progress += 1

        truncated = self.progress >= self.max_episode_length
        terminated = torch.zeros_like(truncated)
        # extras carry "terminate" like every env (the protocol, docs/environments.md); always 0 here.
        return StepResult(self.get_obs(), -cost, terminated, truncated, {"terminate": terminated.float()})

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass
