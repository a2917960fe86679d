"""One trainer per PPO implementation, all configured from a ``Workload``.

A trainer is built once (``make_trainer``) and then trained ``iterate(n)`` iterations at a time, so the
runner can interleave implementations round by round. Each trainer counts env steps in ``steps``.
"""
from __future__ import annotations

import importlib

from bench.workloads import Workload

# name -> (module, the distribution the peer needs)
TRAINERS = {
    "ours": ("bench.peers.ours", None),
    "sb3": ("bench.peers.sb3", "stable_baselines3"),
    "torchrl": ("bench.peers.torchrl_ppo", "torchrl"),
    "rsl_rl": ("bench.peers.rsl", "rsl_rl"),
}


def available(name: str) -> bool:
    needs = TRAINERS[name][1]
    if needs is None:
        return True
    try:
        importlib.import_module(needs)
    except ImportError:
        return False
    return True


def make_trainer(name: str, workload: Workload, seed: int = 0):
    module = importlib.import_module(TRAINERS[name][0])
    return module.Trainer(workload, seed=seed)
