"""Our PPO against Stable-Baselines3, TorchRL and rsl_rl PPO, interleaved, in one invocation.

    python -m bench [--workloads halfcheetah_cleanrl halfcheetah_relu3x256 pendulum_1024 (default) | halfcheetah_8env]
                    [--peers sb3 torchrl rsl_rl] [--rounds 5] [--iterations N] [--threads 1]

Writes bench/results/throughput_<workload>.json; ``python -m bench.report`` turns the results
into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import warnings
from pathlib import Path

import torch

from bench.machine import machine_info
from bench.runner import run_workload
from bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
# iterations per round: about as many steps per round for each workload's scale
DEFAULT_ITERATIONS = {"halfcheetah_cleanrl": 1, "halfcheetah_relu3x256": 1, "pendulum_1024": 4, "halfcheetah_8env": 1}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS)[:3], choices=list(WORKLOADS))
    parser.add_argument("--peers", nargs="+", default=["sb3", "torchrl", "rsl_rl"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=None, help="iterations per round (default per workload)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every implementation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.workloads:
        iterations = args.iterations or DEFAULT_ITERATIONS.get(name, 1)
        result = run_workload(WORKLOADS[name], args.peers, args.rounds, iterations, args.warmup, args.seed)
        result["machine"] = machine_info()
        result["command"] = "python -m bench " + shlex.join(
            ["--workloads", name, "--peers", *args.peers, "--rounds", str(args.rounds), "--iterations",
             str(iterations), "--threads", str(args.threads)])
        path = args.out / f"throughput_{name}.json"
        path.write_text(json.dumps(result, indent=2))
        summary = {n: round(v["sps_median"]) for n, v in result["implementations"].items()}
        print(f"[{name}] median steps/s {summary}; ours / fastest peer ({result.get('fastest_peer')}) = "
              f"{result.get('ratio_vs_fastest_peer', float('nan')):.2f}  -> {path}", flush=True)


if __name__ == "__main__":
    main()
