"""``workbench sweep <name>``: N worker processes on one study, then the summary.

Each worker is ``workbench train -m +sweep=<name> torch_threads=1 ...`` (the Hydra sweeper
with the basic launcher), so workers run trials asynchronously and independently; more can
join from other machines with the same storage URL and study name.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import workbench
from workbench.sweep.driver import budget_used
from workbench.sweep.factory import ENV_WORKER
from workbench.sweep.space import format_value
from workbench.sweep.storage import ENV_STORAGE, load_study, resolve_storage
from workbench.sweep.summary import summary_table, write_csv

REPO_ROOT = Path(workbench.__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# exit codes (docs/sweeps.md): the budget reached; it was not; bad input; Ctrl-C
EXIT_DONE, EXIT_UNFINISHED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def stop_with_parent(parent: int):
    """A ``preexec_fn``: the kernel sends the worker SIGINT when ``workbench sweep`` dies, even
    by SIGKILL, so no worker runs on unsupervised; SIGINT lets it record its trial as
    interrupted and enqueue the retry. Linux only (prctl); elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(EXIT_INTERRUPTED)

    return preexec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench sweep",
        description="Run an Optuna sweep (sweeps/<name>.yaml) with N local worker processes.",
        epilog="Extra arguments are Hydra overrides for every trial, e.g. env.num_envs=256. "
        "The storage URL is handed to workers in $WORKBENCH_SWEEP_STORAGE, never in a config.",
    )
    p.add_argument("name", help="sweep file name in sweeps/ (without .yaml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--n-trials", type=int, help="total trials of the study (all workers, all restarts)")
    p.add_argument("--storage", help="Optuna RDB URL or journal file path (default: sweeps_db/<study>.journal)")
    p.add_argument("--study-name", help="study name (default: the sweep name)")
    p.add_argument("--app", default="workbench.cli", help=argparse.SUPPRESS)  # tests/bench: a fake app module
    return p


def worker_command(app: str, name: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", app]
    if app == "workbench.cli":
        cmd.append("train")
    study = args.study_name or name
    cmd += ["-m", f"+sweep={name}", "torch_threads=1", f"hydra.sweeper.study_name={format_value(study)}",
            f"hydra.sweep.dir={format_value(f'multirun/{study}')}", "hydra.sweeper.print_summary=false",
            "hydra.sweeper.summary_csv=false"]
    if args.n_trials is not None:
        cmd.append(f"hydra.sweeper.n_trials={args.n_trials}")
    return cmd + extra


def sweep_main(argv: list[str]) -> int:
    args, extra = _parser().parse_known_args(argv)
    if args.workers < 1:
        print("workbench sweep: --workers must be >= 1", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.storage:
        env[ENV_STORAGE] = args.storage
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core a worker, numpy included
        env.setdefault(var, "1")
    cmd = worker_command(args.app, args.name, args, extra)

    # Validate once (bad sweep file: one clear error, non-zero exit) and create the study.
    supervised = stop_with_parent(os.getpid())
    check = subprocess.run(cmd + ["hydra.sweeper.dry_run=true"], env=env, preexec_fn=supervised)
    if check.returncode != 0:
        print(f"workbench sweep: the sweep {args.name!r} is invalid (see above); no trial started",
              file=sys.stderr)
        return EXIT_INVALID

    workers = [subprocess.Popen(cmd, env={**env, ENV_WORKER: str(i)}, preexec_fn=supervised)
               for i in range(args.workers)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        # From a terminal the workers got the SIGINT too: give them time to record their
        # interrupted trials (a second SIGINT could cut that short); otherwise pass it on.
        for w in workers:
            try:
                w.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.send_signal(signal.SIGINT)
        for w in workers:
            w.wait()
        print("workbench sweep: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED

    study_name = args.study_name or args.name
    spec = resolve_storage(args.storage, study_name, Path.cwd())
    try:
        study = load_study(spec, study_name)
    except Exception as exc:  # e.g. the storage went away: the trials are still stored
        print(f"workbench sweep: no summary: {exc}", file=sys.stderr)
        return EXIT_UNFINISHED
    print(summary_table(study, args.n_trials))
    path = write_csv(study, (spec.path.parent if spec.path else Path.cwd() / "multirun" / study_name)
                     / f"{study_name}.summary.csv")
    print(f"summary written to {path}")
    return sweep_exit_code(study, args.n_trials, codes)


def budget_reached(study, n_trials: int | None) -> bool:
    """Every trial of the budget finished (a killed worker's trial retried and done counts)."""
    n_trials = n_trials if n_trials is not None else study.user_attrs.get("n_trials")
    trials = study.get_trials(deepcopy=False)
    pending = any(t.state.name in ("RUNNING", "WAITING") for t in trials)
    return n_trials is not None and not pending and budget_used(trials) >= int(n_trials)


def sweep_exit_code(study, n_trials: int | None, codes: list[int]) -> int:
    """0 when every worker ended well, or when the budget was reached whatever happened to a
    worker on the way (a killed worker's trial is retried by the others)."""
    if all(code == 0 for code in codes) or budget_reached(study, n_trials):
        return EXIT_DONE
    for index, code in enumerate(codes):
        if code != 0:
            print(f"workbench sweep: worker {index} {_how_it_ended(code)}", file=sys.stderr)
    print("workbench sweep: the study did not reach its budget; rerun the same command to resume",
          file=sys.stderr)
    return EXIT_UNFINISHED


def _how_it_ended(code: int) -> str:
    if code >= 0:
        return f"exited with {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"
