"""Cart-pole swing-up, batched in torch.

The pole starts hanging down and must be swung up and balanced over a cart on a
finite track. Dynamics are the classic frictionless cart-pole (uniform rod pole,
Barto-Sutton-Anderson equations as corrected by Florian), valid at every angle, so
the swing-up is the full nonlinear problem. The reward follows the spirit of
DeepMind Control's ``cartpole.swingup``: each step pays, in [0, 1],

    upright * centred * small_control * small_velocity

with ``upright = (1 + cos(theta)) / 2`` and the other three factors smooth
bonuses in [0.5, 1] or [0.8, 1]. A pole hanging down earns ~0.

Unlike DM Control, the track ends: a cart past ``|x| > track_limit`` is a true
terminal state (``terminated``), which costs every future reward. The time limit
(500 steps = 10 s) is a truncation. A uniform random policy scores about 5 (and
leaves the track after ~240 steps on average); a swing-up-and-balance controller
scores about 420 (500 is the ceiling, out of reach as the swing-up takes time; see
docs/environments.md and ``python -m bench.cartpole_reference``).

The policy acts in [-1, 1] (scaled to the force range); actions outside are
clipped by the env, never by the agent.

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

# log(0.1): the smooth bonuses fall to 0.1 at their margin, as DM Control's tolerance().
_LOG_TENTH = math.log(0.1)


def gaussian_bonus(value: torch.Tensor, margin: float) -> torch.Tensor:
    """1 at zero, 0.1 at |value| == margin, smooth Gaussian in between and beyond."""
    return torch.exp(_LOG_TENTH * (value / margin).square())


class CartPole(TorchMembers):
    state_names = ("x", "x_dot", "theta", "theta_dot", "progress")

    def __init__(self, num_envs: int = 1024, max_episode_length: int = 500, dt: float = 0.02,
                 device: str | torch.device = "cpu", seed: int = 0,
                 cart_mass: float = 1.0, pole_mass: float = 0.1, pole_length: float = 1.0,
                 gravity: float = 9.81, max_force: float = 10.0, track_limit: float = 2.4,
                 substeps: int = 2, reset_noise: float = 0.01, member_seeds: Sequence[int] | None = None):
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.device = torch.device(device)
        self._init_members(num_envs, seed, member_seeds)  # self.num_envs: all members' envs
        self.action_dim = 1
        self.obs_dim = 5
        self.max_episode_length = max_episode_length
        self.dt = dt
        self.cart_mass = cart_mass
        self.pole_mass = pole_mass
        self.pole_half_length = pole_length / 2
        self.gravity = gravity
        self.max_force = max_force
        self.track_limit = track_limit
        self.substeps = substeps
        self.reset_noise = reset_noise
        # theta is the pole angle from upright (0 = up, pi = hanging down).
        self.x = torch.zeros(self.num_envs, device=self.device)
        self.x_dot = torch.zeros(self.num_envs, device=self.device)
        self.theta = torch.zeros(self.num_envs, device=self.device)
        self.theta_dot = torch.zeros(self.num_envs, device=self.device)
        self.progress = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.reset()

    def _reset_draws(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
        """x, x_dot, theta, theta_dot of ``n`` fresh starts, drawn in this order."""
        noise = [self.reset_noise * torch.randn(n, generator=generator, device=self.device) for _ in range(4)]
        noise[2] = math.pi + noise[2]  # the pole hangs down
        return tuple(noise)

    def reset(self, env_ids: torch.Tensor | None = None) -> TensorDict:
        ids = as_env_ids(env_ids, self.num_envs, self.device)
        if ids.numel():
            ids, (x, x_dot, theta, theta_dot) = self.draw_reset(ids, self._reset_draws)
            self.x[ids], self.x_dot[ids], self.theta[ids], self.theta_dot[ids] = x, x_dot, theta, theta_dot
            self.progress[ids] = 0
        return self.get_obs()

    def get_obs(self) -> TensorDict:
        obs = torch.stack((self.x, self.theta.cos(), self.theta.sin(), self.x_dot, self.theta_dot), dim=-1)
        return TensorDict({"obs": obs}, batch_size=[self.num_envs], device=self.device)

    def accelerations(self, theta: torch.Tensor, theta_dot: torch.Tensor,
                      force: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cart and pole accelerations (x_ddot, theta_ddot) of the frictionless cart-pole."""
        total_mass = self.cart_mass + self.pole_mass
        pole_moment = self.pole_mass * self.pole_half_length
        sin, cos = theta.sin(), theta.cos()
        temp = (force + pole_moment * theta_dot.square() * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.pole_half_length * (4.0 / 3.0 - self.pole_mass * cos.square() / total_mass))
        x_acc = temp - pole_moment * theta_acc * cos / total_mass
        return x_acc, theta_acc

    def step(self, action: torch.Tensor) -> StepResult:
        control = action[:, 0].clamp(-1.0, 1.0)
        force = control * self.max_force
        # Semi-implicit Euler on substeps: stable for the fast swings of a swing-up.
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            x_acc, theta_acc = self.accelerations(self.theta, self.theta_dot, force)
            self.x_dot = self.x_dot + h * x_acc
            self.theta_dot = self.theta_dot + h * theta_acc
            self.x = self.x + h * self.x_dot
            self.theta = self.theta + h * self.theta_dot
        self.progress += 1

        reward = self.reward(control)
        out_of_bounds = self.x.abs() > self.track_limit
        terminated = out_of_bounds
        # A terminal state is never also a truncation: it must not be bootstrapped.
        truncated = (self.progress >= self.max_episode_length) & ~terminated
        extras = {"terminate": terminated.float(), "termination/out_of_bounds": out_of_bounds.float()}
        return StepResult(self.get_obs(), reward, terminated, truncated, extras)

    def reward(self, control: torch.Tensor) -> torch.Tensor:
        """Per-step reward in [0, 1] of the current state under ``control`` in [-1, 1]."""
        upright = (1 + self.theta.cos()) / 2
        centred = (1 + gaussian_bonus(self.x, margin=2.0)) / 2
        small_control = (4 + (1 - control.square())) / 5
        small_velocity = (1 + gaussian_bonus(self.theta_dot, margin=5.0)) / 2
        return upright * centred * small_control * small_velocity

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass
