"""Return of a uniform random policy on any env config, the floor a learned policy must clear.

    python -m bench.random_returns pendulum cartpole halfcheetah hopper

Builds each ``conf/env/<name>.yaml`` through ``make_env`` and plays one full
episode per env with actions uniform in [-1, 1].
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from workbench.envs import BatchedEnv, make_env

CONF_ENV = Path(__file__).resolve().parents[1] / "conf" / "env"


def first_episode_returns(env: BatchedEnv, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return and length of the first episode of every env under uniform random actions."""
    actions = torch.Generator(device=env.device).manual_seed(seed)
    env.reset()
    returns = torch.zeros(env.num_envs, device=env.device)
    lengths = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    alive = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    while alive.any():
        action = torch.rand(env.num_envs, env.action_dim, generator=actions, device=env.device) * 2 - 1
        result = env.step(action)
        returns += result.reward * alive
        lengths += alive.long()
        alive &= ~result.dones
        # An ended env is not stepped again by gymnasium without a reset: restart it, it no longer counts.
        env.reset(result.dones.nonzero().squeeze(-1))
    return returns, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="env config names under conf/env")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.names:
        cfg = OmegaConf.load(CONF_ENV / f"{name}.yaml")
        cfg.num_envs = args.num_envs
        env = make_env(cfg, device="cpu", seed=args.seed)
        try:
            returns, lengths = first_episode_returns(env, args.seed)
        finally:
            env.close()
        print(f"{name:14s} random return {returns.mean():9.1f} +- {returns.std():7.1f}   "
              f"length {lengths.float().mean():6.1f} / {env.max_episode_length}")


if __name__ == "__main__":
    main()
