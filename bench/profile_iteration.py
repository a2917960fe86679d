"""Where one training iteration's time goes: torch kernels (env and network maths) vs Python overhead.

    python -m bench.profile_iteration [HYDRA_OVERRIDES...]

Profiles a few iterations of the default pendulum run with torch.profiler and
reports the share of wall time spent inside ATen operators (self time, so
nested ops are not counted twice). Writes bench/results/profile_iteration.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from workbench.config import register_configs
from workbench.train import build_agent

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
RESULTS = Path(__file__).resolve().parent / "results"


def kernel_share(overrides: list[str], warmup: int = 3, iterations: int = 5) -> dict:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=["logger.mode=disabled", *overrides])
    agent = build_agent(cfg, None)
    agent.evaluator = None  # profile the training iteration itself
    for _ in range(warmup):
        agent.train_iteration()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(iterations):
            agent.train_iteration()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    aten_us = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::"))
    top = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:8]
    # the profiler's own bookkeeping inflates wall time; time the same iterations unprofiled too
    start = time.perf_counter()
    for _ in range(iterations):
        agent.train_iteration()
    plain_wall = time.perf_counter() - start
    return {
        "overrides": overrides, "iterations": iterations, "torch_threads": torch.get_num_threads(),
        "seconds_per_iteration": plain_wall / iterations,
        "profiled_seconds_per_iteration": wall / iterations,
        "kernel_seconds_per_iteration": aten_us / 1e6 / iterations,
        "kernel_share_of_profiled_wall": aten_us / 1e6 / wall,
        "kernel_share_of_plain_wall": min(1.0, aten_us / 1e6 / plain_wall),
        "top_ops": [(e.key, round(e.self_cpu_time_total / 1e3 / iterations, 2)) for e in top],
    }


def main(argv: list[str]) -> None:
    result = kernel_share(argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_iteration.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
