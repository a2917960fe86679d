"""Where our PPO iteration's time goes, phase by phase (no profiler overhead on the totals).

    python -m bench.breakdown [--workload halfcheetah_cleanrl] [--iterations 3]

Times (process CPU time, one torch thread) one iteration's phases by wrapping the agent's own methods with timers: the env step, the
policy/critic forwards during collection, the rest of collection (buffer writes, bookkeeping),
targets (reward norm + GAE), and in the update the minibatch gathers, the actor loss (forward),
the critic loss (forward), the one backward pass, the two step_network calls (gradient checks,
clip, Adam) and metric accumulation. Writes bench/results/breakdown_<workload>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.machine import machine_info
from bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"


class Timers:
    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, owner, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.totals[label] += time.process_time() - start
        setattr(owner, attr, timed)


def breakdown(workload_name: str, iterations: int) -> dict:
    from bench.peers.ours import Trainer
    from workbench.agents.common import metrics
    trainer = Trainer(WORKLOADS[workload_name])
    agent = trainer.agent
    agent.train_iteration()
    timers = Timers()
    timers.wrap(agent.env, "step", "collect/env.step")
    timers.wrap(agent.env, "reset", "collect/env.reset")
    timers.wrap(agent, "collect_rollout", "collect")
    timers.wrap(agent, "compute_targets", "targets")
    timers.wrap(agent, "optimize", "update")
    timers.wrap(agent, "actor_loss", "update/actor_loss (forward)")
    timers.wrap(agent, "critic_loss", "update/critic_loss (forward)")
    timers.wrap(agent, "step_network", "update/step_network x2 (grad checks, clip, Adam)")
    original_backward = torch.autograd.backward  # Tensor.backward looks it up at each call
    timers.wrap(torch.autograd, "backward", "update/backward")
    timers.wrap(agent.model.critic, "forward", "critic.forward (collect + update)")
    original_add = metrics.MeanAccumulator.add
    def timed_add(self, values):
        start = time.process_time()
        original_add(self, values)
        timers.totals["update/metric accumulation"] += time.process_time() - start
    metrics.MeanAccumulator.add = timed_add
    model_forward = agent.model.forward
    def timed_model(*args, **kwargs):
        start = time.process_time()
        try:
            return model_forward(*args, **kwargs)
        finally:
            timers.totals["collect/policy forward (actor+critic)"] += time.process_time() - start
    agent.model.forward = timed_model
    walls = []
    for _ in range(iterations):
        start = time.process_time()
        agent.train_iteration()
        walls.append(time.process_time() - start)
    metrics.MeanAccumulator.add = original_add
    torch.autograd.backward = original_backward
    trainer.close()
    total = sum(walls)
    per_iter = {k: v / iterations for k, v in sorted(timers.totals.items())}
    return {"workload": workload_name, "iterations": iterations, "torch_threads": torch.get_num_threads(),
            "seconds_per_iteration": statistics.median(walls), "clock": "process CPU time",
            "steps_per_second": WORKLOADS[workload_name].steps_per_iteration / statistics.median(walls),
            "phase_seconds_per_iteration": per_iter,
            "phase_share": {k: v * iterations / total for k, v in per_iter.items()},
            "machine": machine_info(),
            "command": f"python -m bench.breakdown --workload {workload_name} --iterations {iterations}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="halfcheetah_cleanrl", choices=list(WORKLOADS))
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = breakdown(args.workload, args.iterations)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"breakdown_{args.workload}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("seconds_per_iteration", "steps_per_second", "phase_share")}, indent=1))


if __name__ == "__main__":
    main()
