"""The floor of a population's update in eager torch: what the bare maths of one minibatch step costs.

    python -m bench.update_floor [--sizes 1 2 4 8 16 32 64] [--workload halfcheetah_cleanrl]

For each population size P, one minibatch step of P stacked actor and critic MLPs (the workload's
layers, ``torch.baddbmm`` per layer, its activation), a clipped-surrogate actor loss and a squared
value loss, one backward pass and ``torch.optim.Adam(fused=True)`` over the stacks. Nothing else:
no observation normalisers, no diagnostics, no gradient norms, clipping or skip masks, no
minibatch gather. It is the least any eager torch implementation of the update does, so its
share of the matmul peak bounds what ours can reach on this machine (``bench.population``
reports ours: the same FLOP count, ``bench.compute_bound.update_flops``, over the same peak).

One torch thread, process CPU time, best of 5 batches. ``--compile`` measures the compiled step
beside the eager one. Writes bench/results/update_floor.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench.compute_bound import best_seconds, layer_dims, matmul_gflops, mlp_train_flops
from bench.machine import machine_info
from bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
# HalfCheetah-v5's observation and action sizes (the workloads' env)
OBS_DIM, ACTION_DIM = 17, 6
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def stacked_mlp(P: int, layers: list[tuple[int, int]]) -> list[torch.Tensor]:
    params = []
    for fan_in, fan_out in layers:
        bound = fan_in ** -0.5
        params += [torch.empty(P, fan_in, fan_out).uniform_(-bound, bound).requires_grad_(),
                   torch.empty(P, 1, fan_out).uniform_(-bound, bound).requires_grad_()]
    return params


def run_mlp(params: list[torch.Tensor], x: torch.Tensor, activation) -> torch.Tensor:
    last = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        x = torch.baddbmm(params[i + 1], x, params[i])
        if i // 2 < last:
            x = activation(x)
    return x


def minibatch_step(P: int, batch: int, hidden: tuple[int, ...], activation: str, compile_loss: bool = False):
    """A closure running one bare minibatch step, the step's matmul FLOPs and the parameters it
    trains (stacks of P). ``compile_loss``:
    forward and losses through ``torch.compile`` (inductor fuses the elementwise ops; the
    backward is compiled with them), the optimizer steps as they are."""
    act = ACTIVATIONS[activation]
    actor = stacked_mlp(P, layer_dims(OBS_DIM, ACTION_DIM, hidden))
    critic = stacked_mlp(P, layer_dims(OBS_DIM, 1, hidden))
    logstd = torch.zeros(P, 1, ACTION_DIM, requires_grad=True)
    optimizers = [torch.optim.Adam(actor + [logstd], lr=3e-4, fused=True), torch.optim.Adam(critic, lr=3e-4, fused=True)]
    obs, action = torch.randn(P, batch, OBS_DIM), torch.randn(P, batch, ACTION_DIM)
    old_neglogp, advantages, returns = torch.randn(P, batch), torch.randn(P, batch), torch.randn(P, batch)

    def loss() -> torch.Tensor:
        mu = run_mlp(actor, obs, act)
        neglogp = (0.5 * ((action - mu) * torch.exp(-logstd)).square() + logstd).sum(-1)
        ratio = torch.exp(old_neglogp - neglogp)
        surrogate = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(0.8, 1.2)).mean(-1)
        value_loss = (run_mlp(critic, obs, act).squeeze(-1) - returns).square().mean(-1)
        return surrogate.sum() + value_loss.sum()

    total = torch.compile(loss) if compile_loss else loss

    def step() -> None:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=False)
        total().backward()
        for optimizer in optimizers:
            optimizer.step()

    flops = P * (mlp_train_flops(batch, layer_dims(OBS_DIM, ACTION_DIM, hidden))
                 + mlp_train_flops(batch, layer_dims(OBS_DIM, 1, hidden)))
    return step, flops, [*actor, logstd, *critic]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.update_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--workload", default="halfcheetah_cleanrl",
                        choices=sorted(n for n, w in WORKLOADS.items() if w.env == "halfcheetah"))
    parser.add_argument("--compile", action="store_true",
                        help="also the step with forward and losses through torch.compile (tens of seconds to compile per size)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    w = WORKLOADS[args.workload]
    peak = max(matmul_gflops(n, n, n) for n in (256, 512, 1024))
    print(f"peak float32 matmul (1 thread): {peak:.0f} GFLOP/s", flush=True)
    rows = {}
    modes = ["eager", "compiled"] if args.compile else ["eager"]
    for P in args.sizes:
        rows[str(P)] = {}
        for mode in modes:  # side by side, under the same peak and load
            step, flops, _ = minibatch_step(P, w.minibatch_size, tuple(w.hidden), w.activation, mode == "compiled")
            started = time.perf_counter()
            step()  # compiles, when compiled
            first_step_s = time.perf_counter() - started
            seconds = best_seconds(step)
            r = rows[str(P)][mode] = {"minibatch_step_ms": 1e3 * seconds, "per_member_ms": 1e3 * seconds / P,
                                      "gflops": flops / seconds / 1e9, "fraction_of_peak": flops / seconds / 1e9 / peak,
                                      "first_step_s": first_step_s}
            print(f"P={P:3d} {mode:8s}: {r['minibatch_step_ms']:7.2f} ms a minibatch step ({r['per_member_ms']:.3f} ms "
                  f"a member), {r['gflops']:5.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f} % of peak "
                  f"(first step {first_step_s:.1f} s)", flush=True)
    out = {"command": "python -m bench.update_floor " + " ".join(argv if argv is not None else []),
           "workload": w.name, "minibatch_size": w.minibatch_size, "hidden": list(w.hidden),
           "activation": w.activation, "peak_gflops": peak, "machine": machine_info(),
           "load_average": list(os.getloadavg()), "sizes": rows, "measured_at": time.time()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "update_floor.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
