"""The floor of a population's update in eager torch: what the bare maths of one minibatch step costs.

    python -m bench.update_floor [--sizes 1 2 4 8 16 32 64] [--workload halfcheetah_cleanrl]
                                 [--compile] [--peers sb3 rsl_rl ours]

For each population size P, one minibatch step of P stacked actor and critic MLPs (the workload's
layers, ``torch.baddbmm`` per layer, its activation), a clipped-surrogate actor loss and a squared
value loss, one backward pass and ``torch.optim.Adam(fused=True)`` over the stacks. Nothing else:
no observation normalisers, no diagnostics, no gradient norms, clipping or skip masks, no
minibatch gather. It is the least any eager torch implementation of the update does, so its
share of the matmul peak bounds what ours can reach on this machine (``bench.population``
reports ours: the same FLOP count, ``bench.compute_bound.update_flops``, over the same peak).

One torch thread, process CPU time, best of 5 batches. ``--compile`` measures the compiled step
beside the eager one. The env steps of one iteration alone (zero actions, one member) and, with
``--peers``, the peers' whole iterations (``bench.peers``) are timed in the same run: at P = 1 the
floor's update plus those env steps is what any trainer spends at least, to hold against 1.5x a
peer's iteration. Writes bench/results/update_floor.json (another workload:
update_floor_<workload>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from bench.compute_bound import best_seconds, layer_dims, matmul_gflops, mlp_train_flops
from bench.machine import machine_info
from bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
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


def env_dims(workload) -> tuple[int, int]:
    """Observation and action sizes of the workload's env, read from the env."""
    if workload.env == "pendulum":
        from workbench.envs.pendulum import Pendulum
        env = Pendulum(1)
        return int(env.get_obs()["obs"].shape[-1]), env.action_dim
    import gymnasium as gym
    env = gym.make(workload.gym_id)
    dims = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    env.close()
    return dims


def minibatch_step(P: int, batch: int, hidden: tuple[int, ...], activation: str, obs_dim: int, action_dim: int,
                   compile_loss: bool = False):
    """A closure running one bare minibatch step, the step's matmul FLOPs and the parameters it
    trains (stacks of P). ``compile_loss``:
    forward and losses through ``torch.compile`` (inductor fuses the elementwise ops; the
    backward is compiled with them), the optimizer steps as they are."""
    act = ACTIVATIONS[activation]
    actor = stacked_mlp(P, layer_dims(obs_dim, action_dim, hidden))
    critic = stacked_mlp(P, layer_dims(obs_dim, 1, hidden))
    logstd = torch.zeros(P, 1, action_dim, requires_grad=True)
    optimizers = [torch.optim.Adam(actor + [logstd], lr=3e-4, fused=True),
                  torch.optim.Adam(critic, lr=3e-4, fused=True)]
    obs, action = torch.randn(P, batch, obs_dim), torch.randn(P, batch, action_dim)
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

    flops = P * (mlp_train_flops(batch, layer_dims(obs_dim, action_dim, hidden))
                 + mlp_train_flops(batch, layer_dims(obs_dim, 1, hidden)))
    return step, flops, [*actor, logstd, *critic]


def peer_iteration_s(name: str, workload, iterations: int = 2) -> float:
    """Median CPU seconds of one whole training iteration (collection and update) of a peer trainer
    on ``workload``, after one warm-up iteration."""
    from bench.peers import make_trainer
    trainer = make_trainer(name, workload)
    trainer.iterate(1)
    seconds = []
    for _ in range(iterations):
        start = time.process_time()
        trainer.iterate(1)
        seconds.append(time.process_time() - start)
    trainer.close()
    return sorted(seconds)[len(seconds) // 2]


def env_steps_s(workload) -> float:
    """CPU seconds of one iteration's env steps alone (zero actions, done envs reset), one member:
    what any trainer's collection costs at least."""
    if workload.env == "pendulum":
        from workbench.envs.pendulum import Pendulum
        env = Pendulum(workload.num_envs)
        action = torch.zeros(workload.num_envs, 1)

        def run() -> None:
            for _ in range(workload.num_steps):
                env.reset(env.step(action).dones.nonzero().squeeze(-1))
    else:
        import gymnasium as gym
        import numpy as np
        envs = [gym.make(workload.gym_id) for _ in range(workload.num_envs)]
        for i, e in enumerate(envs):
            e.reset(seed=i)
        zero = np.zeros(envs[0].action_space.shape, dtype=np.float32)

        def run() -> None:
            for _ in range(workload.num_steps):
                for e in envs:
                    _, _, terminated, truncated, _ = e.step(zero)
                    if terminated or truncated:
                        e.reset()
    return best_seconds(run, repeats=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.update_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--workload", default="halfcheetah_cleanrl", choices=sorted(WORKLOADS))
    parser.add_argument("--peers", nargs="*", default=[], choices=["sb3", "rsl_rl", "ours"],
                        help="also time these trainers' whole iterations (bench.peers) in the same run, so the "
                             "floor can be held against issue 9's target of 1.5x the fastest peer at P = 1")
    parser.add_argument("--compile", action="store_true",
                        help="also the step with forward and losses through torch.compile "
                             "(tens of seconds to compile per size)")
    args = parser.parse_args(argv)
    if any(P < 1 for P in args.sizes):
        parser.error(f"--sizes {' '.join(map(str, args.sizes))}: population sizes must be >= 1")
    torch.set_num_threads(1)
    w = WORKLOADS[args.workload]
    peak = max(matmul_gflops(n, n, n) for n in (256, 512, 1024))
    print(f"peak float32 matmul (1 thread): {peak:.0f} GFLOP/s", flush=True)
    dims = env_dims(w)
    rows = {}
    modes = ["eager", "compiled"] if args.compile else ["eager"]
    for P in args.sizes:
        rows[str(P)] = {}
        for mode in modes:  # side by side, under the same peak and load
            step, flops, _ = minibatch_step(P, w.minibatch_size, tuple(w.hidden), w.activation, *dims,
                                            compile_loss=mode == "compiled")
            started = time.perf_counter()
            step()  # compiles, when compiled
            first_step_s = time.perf_counter() - started
            seconds = best_seconds(step)
            r = rows[str(P)][mode] = {"minibatch_step_ms": 1e3 * seconds, "per_member_ms": 1e3 * seconds / P,
                                      "gflops": flops / seconds / 1e9, "fraction_of_peak": flops / seconds / 1e9 / peak,
                                      "first_step_s": first_step_s,
                                      # the whole update of one iteration at this floor
                                      "iteration_update_s": seconds * w.epochs * w.minibatches}
            print(f"P={P:3d} {mode:8s}: {r['minibatch_step_ms']:7.2f} ms a minibatch step ({r['per_member_ms']:.3f} ms "
                  f"a member), {r['gflops']:5.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f} % of peak "
                  f"(first step {first_step_s:.1f} s; {r['iteration_update_s']:.3f} s an iteration)", flush=True)
    env_s = env_steps_s(w)
    print(f"env steps of one iteration alone: {env_s:.3f} CPU s", flush=True)
    peers = {}
    for name in args.peers:
        seconds = peer_iteration_s(name, w)
        peers[name] = {"iteration_s": seconds, "iteration_for_1_5x_s": seconds / 1.5}
        print(f"{name}: {seconds:.3f} CPU s an iteration; 1.5x its rate needs {seconds / 1.5:.3f} s", flush=True)
    out = {"command": " ".join(["python -m bench.update_floor", *(sys.argv[1:] if argv is None else argv)]),
           "workload": w.name, "minibatch_size": w.minibatch_size, "hidden": list(w.hidden),
           "activation": w.activation, "peak_gflops": peak, "machine": machine_info(),
           "load_average": list(os.getloadavg()), "sizes": rows, "env_steps_s": env_s, "peers": peers,
           "measured_at": time.time()}
    RESULTS.mkdir(exist_ok=True)
    name = "update_floor.json" if w.name == "halfcheetah_cleanrl" else f"update_floor_{w.name}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
