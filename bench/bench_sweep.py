"""Sweep machinery benchmark: per-trial overhead and trials/hour with 1 vs 2 workers.

    python bench/bench_sweep.py [--trials 8] [--rounds 2] [--out bench/results/sweep.json]

1. Per-trial overhead. A worker runs trials back to back; the cycle time of a trial is the
   time from one trial's start to the next one's start (storage timestamps), so it holds
   everything: asking and sampling, config composition, the Hydra job, run_trial's storage
   traffic, W&B start/finish and the training itself. Measured for
     - fake:          the fake app, no training and no W&B (the sweep machinery alone),
     - real_disabled: the real app, one tiny iteration, W&B disabled,
     - real_offline:  the same with W&B offline (the default).
   Overhead = cycle time minus the training's own wall time (W&B summary `wall_time_s` is
   not used; the tiny training takes a few ms, reported as `train_s`).
2. Throughput. The same sweep of CPU-bound single-threaded trials with 1 and 2 workers
   (`workbench sweep --workers N`), alternating (1, 2, 1, 2, ...) so that machine drift hits
   both; the ratio is the median over rounds. Trials/hour over the span from the first
   trial's start to the last trial's end (a worker's start-up, `hydra.sweeper.preload`,
   comes before its first trial: this is the rate of a long sweep), and over the whole
   command's wall time (adds the fixed start-up a long sweep amortises: the validating dry
   run, worker start, the summary).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.testing.fake_sweep.harness import env_for, open_study, sweep_cli_cmd, write_sweep  # noqa: E402

TINY_REAL = ["env.num_envs=8", "agent.num_steps=16", "agent.batch_size=128", "agent.training_max_steps=128",
             "agent.evaluator.eval_metrics_every=1", "agent.evaluator.num_envs=2",
             "agent.evaluator.max_eval_steps=5", "hydra.sweeper.objective.report_every=1"]


def _span(study) -> tuple[list[float], float]:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_start)
    starts = [t.datetime_start.timestamp() for t in trials]
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    cycles = [b - a for a, b in zip(starts, starts[1:])]
    return cycles, max(ends) - min(starts)


def _run(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env_for(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def overhead(kind: str, n: int) -> dict:
    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = f"oh_{kind}"
        if kind == "fake":
            write_sweep(tmp, name, {"n_trials": n}, iterations=1, iteration_seconds=0.0)
            cmd = sweep_cli_cmd(tmp, name, ["--workers", "1"])
        else:
            mode = "disabled" if kind == "real_disabled" else "offline"
            cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "--workers", "1",
                   "--study-name", name, "--n-trials", str(n), f"logger.mode={mode}", *TINY_REAL]
        wall = _run(cmd, tmp)
        study = open_study(tmp, name)
        cycles, _ = _span(study)
        cycles = cycles[1:]  # the first trial pays for imports
        train = [t.duration.total_seconds() for t in study.trials]
        return {"trials": n, "cycle_s_median": statistics.median(cycles), "cycle_s_mean": statistics.fmean(cycles),
                "trial_duration_s_median": statistics.median(train), "command_wall_s": wall}


def throughput(workers: int, n: int, seconds: float, real: bool) -> dict:
    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = f"tp{workers}"
        if real:
            cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "--workers", str(workers),
                   "--study-name", name, "--n-trials", str(n), "logger.mode=offline", "env.num_envs=256",
                   "agent.batch_size=2048", "agent.training_max_steps=163840", "agent.evaluator.eval_metrics_every=5",
                   "hydra.sweeper.pruner=null"]
        else:
            write_sweep(tmp, name, {"n_trials": n, "pruner": None}, iterations=10, iteration_seconds=seconds / 10)
            cmd = sweep_cli_cmd(tmp, name, ["--workers", str(workers), "fake.busy=true"])
        cpu0 = _children_cpu()
        wall = _run(cmd, tmp)
        study = open_study(tmp, name)
        _, span = _span(study)
        busy = sum(t.duration.total_seconds() for t in study.trials)
        cpu = _children_cpu() - cpu0
        return {"workers": workers, "trials": n, "span_s": span, "command_wall_s": wall,
                # share of worker-time spent inside trials: ~1.0 = no idle worker (no barrier);
                # the speed-up left over is the CPU's (shared machines: see loadavg_before)
                "busy_fraction": busy / (workers * span),
                "cpu_s_per_trial": cpu / n,
                "trials_per_hour_span": 3600 * n / span, "trials_per_hour_wall": 3600 * n / wall}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial-seconds", type=float, default=3.0, help="CPU seconds per fake throughput trial")
    p.add_argument("--rounds", type=int, default=2, help="alternating 1-worker/2-worker pairs (median ratio)")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--only", choices=["overhead", "throughput"], help="run one part only")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "sweep.json"))
    args = p.parse_args()

    result: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "platform": platform.platform()}, "overhead": {}, "throughput": {}}
    # the machine may be shared: the load average before each part says how clean a figure is
    result["loadavg_before"] = {} if args.only == "throughput" else {"overhead": os.getloadavg()}
    kinds = ["fake"] + ([] if args.skip_real else ["real_disabled", "real_offline"])
    if args.only == "throughput":
        kinds = []
    for kind in kinds:
        result["overhead"][kind] = overhead(kind, args.trials)
        print(kind, json.dumps(result["overhead"][kind]), flush=True)
    if "real_offline" in result["overhead"]:
        o = result["overhead"]
        result["overhead"]["wandb_start_finish_s"] = o["real_offline"]["cycle_s_median"] - o["real_disabled"]["cycle_s_median"]
    parts = [("fake_cpu_bound", False)] + ([] if args.skip_real else [("real_pendulum", True)])
    for label, real in parts if args.only != "overhead" else []:
        result["loadavg_before"][label] = os.getloadavg()
        rounds = []
        for _ in range(args.rounds):  # 1 and 2 workers alternate, so machine drift hits both
            one = throughput(1, args.trials, args.trial_seconds, real)
            two = throughput(2, args.trials, args.trial_seconds, real)
            rounds.append({"one_worker": one, "two_workers": two,
                           "ratio_span": two["trials_per_hour_span"] / one["trials_per_hour_span"],
                           "ratio_wall": two["trials_per_hour_wall"] / one["trials_per_hour_wall"]})
            print(label, json.dumps(rounds[-1]), flush=True)
        result["throughput"][label] = {
            "rounds": rounds,
            "ratio_span": statistics.median(r["ratio_span"] for r in rounds),
            "ratio_wall": statistics.median(r["ratio_wall"] for r in rounds),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.exists():  # one part rerun: keep the other part's figures
        previous = json.loads(out.read_text())
        for key in ("overhead", "throughput"):
            result[key] = result[key] or previous.get(key, {})
        result["loadavg_before"] = {**previous.get("loadavg_before", {}), **result["loadavg_before"]}
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
