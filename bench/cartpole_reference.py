"""Reference returns for the cart-pole swing-up: a random policy and a hand-made controller.

The controller shows what a good return is without any training: energy pumping
swings the pole up (Astrom & Furuta), then a discrete LQR, computed from a
finite-difference linearisation of the env's own dynamics, balances it and centres
the cart. A learned PPO policy should land between the two, close to the controller.

    python -m bench.cartpole_reference
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from workbench.envs.cartpole import CartPole

Policy = Callable[[CartPole], torch.Tensor]


def random_policy(env: CartPole) -> torch.Tensor:
    return torch.rand(env.num_envs, 1, generator=env.generator, device=env.device) * 2 - 1


def episode_returns(env: CartPole, policy: Policy) -> tuple[torch.Tensor, torch.Tensor]:
    """Return and length of the first episode of every env (one full episode each)."""
    env.reset()
    returns = torch.zeros(env.num_envs, device=env.device)
    lengths = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    alive = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    for _ in range(env.max_episode_length):
        result = env.step(policy(env))
        returns += result.reward * alive
        lengths += alive.long()
        alive &= ~result.dones
        if not alive.any():
            break
    return returns, lengths


def _linearise(env: CartPole, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete-time (A, B) of one env step about the upright rest state [x, x_dot, theta, theta_dot]."""
    def one_step(state: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
        x, x_dot, theta, theta_dot = state.double().unbind(-1)
        h = env.dt / env.substeps
        for _ in range(env.substeps):
            x_acc, theta_acc = env.accelerations(theta, theta_dot, force.double())
            x_dot, theta_dot = x_dot + h * x_acc, theta_dot + h * theta_acc
            x, theta = x + h * x_dot, theta + h * theta_dot
        return torch.stack((x, x_dot, theta, theta_dot), -1)

    zero = torch.zeros(4, dtype=torch.float64)
    no_force = torch.zeros((), dtype=torch.float64)
    a = torch.stack([(one_step(zero + eps * e, no_force) - one_step(zero - eps * e, no_force)) / (2 * eps)
                     for e in torch.eye(4, dtype=torch.float64)], dim=1)
    b = ((one_step(zero, no_force + eps) - one_step(zero, no_force - eps)) / (2 * eps)).reshape(4, 1)
    return a, b


def lqr_gain(env: CartPole, state_cost=(1.0, 0.1, 10.0, 0.1), force_cost: float = 0.01) -> torch.Tensor:
    """Feedback gain K (force = -K @ state) from the discrete Riccati recursion."""
    a, b = _linearise(env)
    q = torch.diag(torch.tensor(state_cost, dtype=torch.float64))
    r = torch.tensor([[force_cost]], dtype=torch.float64)
    p = q.clone()
    for _ in range(2000):
        k = torch.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    return k.reshape(4)


class SwingUpController:
    """Energy pumping far from upright, LQR near it."""

    def __init__(self, env: CartPole, pump_gain: float = 2.0, centring_gain: float = 1.0,
                 balance_cos: float = 0.8):
        self.gain = lqr_gain(env).float().to(env.device)
        self.pump_gain = pump_gain
        self.centring_gain = centring_gain
        self.balance_cos = balance_cos

    def __call__(self, env: CartPole) -> torch.Tensor:
        # Pole energy relative to upright at rest (0 there, negative below).
        inertia = 4.0 / 3.0 * env.pole_mass * env.pole_half_length ** 2
        energy = (0.5 * inertia * env.theta_dot.square()
                  + env.pole_mass * env.gravity * env.pole_half_length * (env.theta.cos() - 1))
        # dE/dt = -m l a theta_dot cos(theta) for cart acceleration a: push with E * theta_dot * cos.
        pump = self.pump_gain * energy * env.theta_dot * env.theta.cos()
        pump = pump - self.centring_gain * (env.x + 0.5 * env.x_dot)
        # Wrap theta to (-pi, pi] so the LQR sees the small error from upright.
        angle = torch.remainder(env.theta + math.pi, 2 * math.pi) - math.pi
        state = torch.stack((env.x, env.x_dot, angle, env.theta_dot), -1)
        balance = -(state @ self.gain) / env.max_force
        near_upright = env.theta.cos() > self.balance_cos
        return torch.where(near_upright, balance, pump).clamp(-1, 1).unsqueeze(-1)


def main() -> None:
    env = CartPole(num_envs=256, seed=0)
    for name, policy in (("random (uniform in [-1, 1])", random_policy),
                         ("swing-up + LQR controller", SwingUpController(env))):
        returns, lengths = episode_returns(env, policy)
        print(f"{name:28s} return {returns.mean():7.1f} +- {returns.std():5.1f}   "
              f"length {lengths.float().mean():5.1f} / {env.max_episode_length}")


if __name__ == "__main__":
    main()
