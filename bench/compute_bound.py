"""The compute bound: this machine's float32 matmul throughput, and the fraction our update phase reaches.

    python -m bench.compute_bound [--threads 1] [--workloads halfcheetah_cleanrl ...]

Peak: torch.mm on square float32 matrices (and on the update's own layer shapes). Update phase:
our agent's ``optimize`` (all epochs x minibatches of one iteration) timed after a real rollout;
its useful FLOPs are the MLPs' forward + backward matmuls, counted per minibatch as
forward 2*B*in*out per layer, backward 2*B*in*out for the weight gradient of every layer plus
2*B*in*out for the input gradient of every layer but the first, for actor and critic.
All times are process CPU time (one torch thread), so other jobs on a shared machine do not
dilute the figures. Writes bench/results/compute_bound.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.machine import machine_info
from bench.workloads import WORKLOADS, Workload

RESULTS = Path(__file__).resolve().parent / "results"


def best_seconds(call, min_seconds: float = 0.3, repeats: int = 5) -> float:
    """Best-of-``repeats`` CPU seconds of one ``call()``, over batches calibrated to about
    ``min_seconds / repeats`` each."""
    call()
    calls = 1
    while True:  # calibrate a batch of calls that takes about min_seconds / repeats
        start = time.process_time()
        for _ in range(calls):
            call()
        if time.process_time() - start > min_seconds / repeats:
            break
        calls *= 2
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - start) / calls)
    return best


def matmul_gflops(m: int, k: int, n: int, min_seconds: float = 0.3, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of C = A @ B with A [m, k], B [k, n] (float32), C preallocated."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    return 2.0 * m * k * n / best_seconds(lambda: torch.mm(a, b, out=out), min_seconds, repeats) / 1e9


def layer_dims(obs_dim: int, out_dim: int, hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    dims = [obs_dim, *hidden, out_dim]
    return list(zip(dims[:-1], dims[1:]))


def mlp_train_flops(batch: int, layers: list[tuple[int, int]]) -> int:
    """Matmul FLOPs of one forward + backward pass of an MLP (first layer: no input gradient)."""
    fwd = sum(2 * batch * i * o for i, o in layers)
    weight_grad = fwd
    input_grad = sum(2 * batch * i * o for i, o in layers[1:])
    return fwd + weight_grad + input_grad


def update_flops(w: Workload, obs_dim: int, action_dim: int) -> int:
    per_minibatch = (mlp_train_flops(w.minibatch_size, layer_dims(obs_dim, action_dim, w.hidden))
                     + mlp_train_flops(w.minibatch_size, layer_dims(obs_dim, 1, w.hidden)))
    return per_minibatch * w.epochs * w.minibatches


def time_update(w: Workload, iterations: int = 3) -> dict:
    from bench.peers.ours import Trainer
    trainer = Trainer(w)
    agent = trainer.agent
    agent.train_iteration()  # warm-up
    collect, update = [], []
    for _ in range(iterations):
        start = time.process_time()
        buf, _ = agent.collect_rollout()
        agent.compute_targets(buf)
        mid = time.process_time()
        agent.optimize(buf)
        update.append(time.process_time() - mid)
        collect.append(mid - start)
    obs_dim = agent.env.get_obs()["obs"].shape[-1]
    trainer.close()
    return {"obs_dim": obs_dim, "action_dim": agent.env.action_dim, "collect_s": statistics.median(collect),
            "update_s": statistics.median(update)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS)[:3], choices=list(WORKLOADS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    square = {n: matmul_gflops(n, n, n) for n in (256, 512, 1024)}
    peak = max(square.values())
    result = {"threads": args.threads, "square_matmul_gflops": square, "peak_gflops": peak, "workloads": {},
              "machine": machine_info(),
              "command": f"python -m bench.compute_bound --threads {args.threads} --workloads "
                         + " ".join(args.workloads)}
    for name in args.workloads:
        w = WORKLOADS[name]
        timing = time_update(w)
        flops = update_flops(w, timing["obs_dim"], timing["action_dim"])
        layers = layer_dims(timing["obs_dim"], timing["action_dim"], w.hidden)
        shape_gflops = {f"{w.minibatch_size}x{i}x{o}": matmul_gflops(w.minibatch_size, i, o) for i, o in layers}
        achieved = flops / timing["update_s"] / 1e9
        result["workloads"][name] = {
            **timing, "minibatch_size": w.minibatch_size, "minibatches_per_update": w.epochs * w.minibatches,
            "update_gflop": flops / 1e9, "update_gflops_achieved": achieved,
            "fraction_of_peak": achieved / peak, "same_shape_matmul_gflops": shape_gflops,
            "fraction_of_same_shape_matmul": achieved / statistics.mean(shape_gflops.values()),
            "update_share_of_iteration": timing["update_s"] / (timing["update_s"] + timing["collect_s"])}
        print(name, json.dumps(result["workloads"][name]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compute_bound.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({"peak_gflops": peak, "square": square}))


if __name__ == "__main__":
    main()
