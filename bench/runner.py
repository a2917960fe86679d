"""Interleaved throughput runs: every implementation trains on one workload, round by round.

Each trainer is built once and warmed up; then each round trains every implementation for the
same number of iterations, one after the other (the order rotates each round), timing end-to-end
iterations (collection plus updates). Medians over rounds, and ours/peer ratios taken round by
round, so drift of a shared machine hits both sides of a ratio alike. Process CPU time is recorded
beside wall time: on a machine shared with other jobs, steps per CPU-second is the steadier figure.
"""
from __future__ import annotations

import gc
import statistics
import time

from bench.peers import available, make_trainer
from bench.workloads import Workload


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def run_workload(workload: Workload, peers: list[str], rounds: int, iterations: int, warmup: int = 1,
                 seed: int = 0, log=print) -> dict:
    names = ["ours"] + [p for p in peers if p in workload.peers]
    skipped = [p for p in names if not available(p)]
    names = [p for p in names if p not in skipped]
    trainers = {}
    build_s = {}
    for name in names:
        start = time.perf_counter()
        trainers[name] = make_trainer(name, workload, seed=seed)
        trainers[name].iterate(warmup)
        build_s[name] = time.perf_counter() - start
    sps: dict[str, list[float]] = {name: [] for name in names}
    cpu_sps: dict[str, list[float]] = {name: [] for name in names}
    steps = iterations * workload.steps_per_iteration
    for r in range(rounds):
        for name in rotate(names, r):
            gc.collect()
            start, cpu_start = time.perf_counter(), time.process_time()
            trainers[name].iterate(iterations)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            sps[name].append(steps / seconds)
            cpu_sps[name].append(steps / cpu_seconds)
        log(f"[{workload.name}] round {r + 1}/{rounds}: "
            + "  ".join(f"{n} {sps[n][-1]:,.0f} ({cpu_sps[n][-1]:,.0f}/cpu-s)" for n in names) + " steps/s")
    for trainer in trainers.values():
        trainer.close()

    result = {"workload": workload.name, "description": workload.description, "settings": _settings(workload),
              "rounds": rounds, "iterations_per_round": iterations, "warmup_iterations": warmup,
              "steps_per_round": iterations * workload.steps_per_iteration, "skipped": skipped,
              "setup_and_warmup_s": build_s, "implementations": {}}
    for name in names:
        result["implementations"][name] = {
            "sps_per_round": sps[name], "sps_median": statistics.median(sps[name]),
            "sps_min": min(sps[name]), "sps_max": max(sps[name]),
            "cpu_sps_per_round": cpu_sps[name], "cpu_sps_median": statistics.median(cpu_sps[name])}
    for name in names[1:]:
        per_round = [o / p for o, p in zip(sps["ours"], sps[name])]
        cpu_per_round = [o / p for o, p in zip(cpu_sps["ours"], cpu_sps[name])]
        result["implementations"][name].update({
            "ratio_ours_over_peer_per_round": per_round,
            "ratio_ours_over_peer_median": statistics.median(per_round),
            "cpu_ratio_ours_over_peer_per_round": cpu_per_round,
            "cpu_ratio_ours_over_peer_median": statistics.median(cpu_per_round)})
    fastest = max(names[1:], key=lambda n: result["implementations"][n]["sps_median"], default=None)
    if fastest is not None:
        result["fastest_peer"] = fastest
        result["ratio_vs_fastest_peer"] = result["implementations"][fastest]["ratio_ours_over_peer_median"]
        cpu_fastest = max(names[1:], key=lambda n: result["implementations"][n]["cpu_sps_median"])
        result["cpu_fastest_peer"] = cpu_fastest
        result["cpu_ratio_vs_fastest_peer"] = result["implementations"][cpu_fastest]["cpu_ratio_ours_over_peer_median"]
    return result


def _settings(w: Workload) -> dict:
    return {"env": w.gym_id, "num_envs": w.num_envs, "num_steps": w.num_steps, "epochs": w.epochs,
            "minibatches": w.minibatches, "minibatch_size": w.minibatch_size, "hidden": list(w.hidden),
            "activation": w.activation, "lr": w.lr, "gamma": w.gamma, "lambda": w.lam, "clip": w.clip,
            "grad_clip": w.grad_clip, "learnable_std": w.learnable_std, "init_logstd": w.init_logstd,
            "normalize_obs": w.normalize_obs}
