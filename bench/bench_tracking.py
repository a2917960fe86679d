"""Tracking overhead: a synthetic training loop with and without Tracker.

Each "run" does ``--iters`` iterations of about ``--work-s`` seconds of torch
work and logs ~80 keys an iteration. Runs alternate A (no tracking) and B
(Tracker, offline, including start and finish) so load drifts hit both alike.
Overhead = (median B - median A) / median A, whole-run wall time.

    python bench/bench_tracking.py                    # 100 x 0.3 s, 3 pairs (~3 min)
    python bench/bench_tracking.py --iters 20 --pairs 2 --work-s 0.05   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench.tracking import LoggerConfig, Tracker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tracking_overhead.json"


def calibrate(work_s: float) -> int:
    """Matmuls per iteration that take about work_s seconds on this machine."""
    a = torch.randn(256, 256)
    for _ in range(5):
        a = torch.tanh(a @ a)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        a = torch.tanh(a @ a)
        n += 1
    per_op = (time.perf_counter() - t0) / n
    return max(1, round(work_s / per_op))


def metrics(i: int, frames: float) -> dict:
    keys = {"info/frames": frames, "info/episode_reward": -1000.0 + i, "info/sps": 5000.0}
    for group in ("actor", "critic"):
        for name in ("grad_norm_before_clip", "grad_norm_after_clip", "clip_frac", "approx_kl", "bad_grads_count"):
            keys[f"{group}/{name}"] = 0.1 * i + len(name)
    for j in range(64):
        keys[f"grad_layers/actor/layer{j}.weight"] = 1.0 / (i + j + 1)
    if i % 10 == 9:
        keys["eval/episode_reward"] = -900.0 + i
    return keys


def one_run(iters: int, ops: int, tracked: bool, out: Path) -> tuple[float, float]:
    """(run wall time, time the training thread spent inside Tracker calls)."""
    a = torch.randn(256, 256)
    t0 = time.perf_counter()
    in_tracker = 0.0
    tracker = None
    if tracked:
        # as training starts it: W&B comes up in a background thread while the loop runs
        tracker = Tracker.start({"bench": {"iters": iters}}, LoggerConfig(mode="offline"), out, background=True)
        in_tracker += time.perf_counter() - t0
    for i in range(iters):
        for _ in range(ops):
            a = torch.tanh(a @ a)
        row = metrics(i, float((i + 1) * 4096))
        if tracker is not None:
            t = time.perf_counter()
            tracker.log(row)
            in_tracker += time.perf_counter() - t
    if tracker is not None:
        t = time.perf_counter()
        tracker.finish()
        in_tracker += time.perf_counter() - t
    return time.perf_counter() - t0, in_tracker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--work-s", type=float, default=0.3)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(1)  # one core for "training"; wandb-core gets the other
    os.environ.setdefault("WANDB_SILENT", "true")
    # Importing wandb is a one-off per process (~1 s, paid by any W&B user);
    # it is measured and reported apart from the per-run overhead.
    t_import = time.perf_counter()
    import wandb  # noqa: F401

    import_s = time.perf_counter() - t_import
    ops = calibrate(args.work_s)
    n_keys = len(metrics(9, 0.0))
    plain, tracked, blocking = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            plain.append(one_run(args.iters, ops, False, Path(tmp) / f"a{pair}")[0])
            wall, inside = one_run(args.iters, ops, True, Path(tmp) / f"b{pair}")
            tracked.append(wall)
            blocking.append(inside / wall)
            print(f"pair {pair}: without {plain[-1]:.2f} s, with {wall:.2f} s "
                  f"({100 * inside / wall:.2f}% inside Tracker calls)", flush=True)
    base, with_t = statistics.median(plain), statistics.median(tracked)
    overhead = (with_t - base) / base
    result = {
        "benchmark": "tracking_overhead",
        "iters": args.iters,
        "work_s_per_iter": args.work_s,
        "keys_per_row": n_keys,
        "pairs": args.pairs,
        "without_tracking_s": plain,
        "with_tracking_s": tracked,
        "median_without_s": base,
        "median_with_s": with_t,
        "overhead_ratio": overhead,
        "pair_ratios": [b / a - 1 for a, b in zip(plain, tracked)],
        # Low-noise figure: share of the tracked run's wall time the training
        # thread spent blocked in Tracker.start/log/finish (wandb-core runs in
        # its own process; on a busy 2-core machine it also competes for CPU,
        # which only the wall-clock comparison above can show).
        "blocking_share_median": statistics.median(blocking),
        "wandb_import_s": import_s,
        "overhead_per_iter_ms": 1000 * (with_t - base) / args.iters,
        "wandb": __import__("wandb").__version__,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"tracking overhead: {100 * overhead:+.2f}% of a {base:.1f} s run (wall clock, median of "
          f"{args.pairs} interleaved pairs); time blocked in Tracker calls: "
          f"{100 * result['blocking_share_median']:.2f}% ({n_keys} keys a row); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
