"""``workbench sweep <name>``: N worker processes on one study, then the summary.

Each worker is ``workbench train -m +sweep=<name> torch_threads=1 ...`` (the Hydra sweeper
with the basic launcher), so workers run trials asynchronously and independently; more can
join from other machines with the same storage URL and study name.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import workbench
from workbench.sweep.devices import DeviceError, check_available, parse_devices, worker_device
from workbench.sweep.driver import budget_used
from workbench.sweep.factory import ENV_WORKER
from workbench.errors import EXIT_REFUSED, OneLineArgumentParser, flatten, one_line, refuse
from workbench.sweep.errors import SweepConfigError
from workbench.sweep.files import check_sweep_file, find_sweep_file, sweep_dirs
from workbench.sweep.space import format_value
from workbench.sweep.storage import ENV_STORAGE, check_storage, load_study, resolve_storage
from workbench.sweep.summary import ENV_STARTED, progress_line, summary_csv_path, summary_table, write_csv
from workbench.tracking.secrets import scrub_text

PROG = "workbench sweep"
OPTIONS = "--workers, --n-trials, --population, --storage, --storage-file, --study-name, --devices"

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
    p = OneLineArgumentParser(
        prog=PROG,
        description="Run an Optuna sweep (sweeps/<name>.yaml) with N local worker processes.",
        epilog="Extra arguments are Hydra overrides for every trial, e.g. env.num_envs=256. "
        "The storage URL is handed to workers in $WORKBENCH_SWEEP_STORAGE, never in a config or on a "
        "command line; give it without a command line with --storage-file or $WORKBENCH_SWEEP_STORAGE.",
    )
    p.add_argument("name", help="sweep file name in sweeps/ (without .yaml)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--n-trials", type=int, help="total trials of the study (all workers, all restarts)")
    p.add_argument("--population", type=int, help="trials each worker trains side by side, as one "
                                                  "batched population (hydra.sweeper.population)")
    p.add_argument("--storage", help="Optuna RDB URL or journal file path (default: sweeps_db/<study>.journal)")
    p.add_argument("--storage-file", type=Path,
                   help="a file whose first line is the storage URL: keeps a password off the command line")
    p.add_argument("--study-name", help="study name (default: the sweep name)")
    p.add_argument("--devices", help="comma-separated devices, worker i gets the (i mod len)-th: "
                   "cpu or cuda:N (e.g. cuda:0,cuda:1); a CUDA worker sees only its own GPU")
    p.add_argument("--app", default="workbench.cli", help=argparse.SUPPRESS)  # tests/bench: a fake app module
    return p


def study_sweep_dir(study: str) -> str:
    """The ``hydra.sweep.dir`` of a study's jobs under ``workbench sweep`` and ``workbench reevaluate``
    (relative to the directory they run in): trials write ``<it>/<trial number>/``; the summary and
    re-evaluation CSVs go there when the storage is a database server."""
    return f"multirun/{study}"


def worker_command(app: str, name: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", app]
    if app == "workbench.cli":
        cmd.append("train")
    study = args.study_name or name
    cmd += ["-m", f"+sweep={name}", "torch_threads=1", f"hydra.sweeper.study_name={format_value(study)}",
            f"hydra.sweep.dir={format_value(study_sweep_dir(study))}", "hydra.sweeper.print_summary=false",
            "hydra.sweeper.summary_csv=false"]
    if args.n_trials is not None:
        cmd.append(f"hydra.sweeper.n_trials={args.n_trials}")
    if args.population is not None:
        cmd.append(f"hydra.sweeper.population={args.population}")
    return cmd + extra


def _storage_url(args: argparse.Namespace) -> str | None:
    if args.storage and args.storage_file:
        refuse(PROG, "give --storage or --storage-file, not both")
    if args.storage_file is None:
        return args.storage
    try:
        lines = args.storage_file.read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        refuse(PROG, f"--storage-file {args.storage_file}: cannot read it ({getattr(err, 'strerror', err)}); "
                     "it must hold the storage URL on its first line")
    if not lines or not lines[0].strip():
        refuse(PROG, f"--storage-file {args.storage_file} is empty; it must hold the storage URL on its first line")
    return lines[0].strip()


def _check_arguments(args: argparse.Namespace, extra: list[str]) -> None:
    """Refuse, in one line, what the workers would otherwise refuse with Hydra's usage text."""
    for arg in extra:
        if arg.startswith("-"):
            refuse(PROG, f"unknown option {arg.split('=', 1)[0]!r}; options: {OPTIONS} "
                         "(other arguments are Hydra overrides key=value)")
        if "=" not in arg and not arg.startswith("~"):  # ~key deletes a key: an override without '='
            refuse(PROG, f"unexpected argument {arg!r}: not an option ({OPTIONS}) nor a Hydra override key=value")
    for flag, value in (("--workers", args.workers), ("--n-trials", args.n_trials), ("--population", args.population)):
        if value is not None and value < 1:
            refuse(PROG, f"{flag}={value} is not allowed: must be >= 1")
    if args.devices is not None and any(arg.split("=", 1)[0].lstrip("+~") == "device" for arg in extra):
        refuse(PROG, "give --devices or a device= override, not both")
    path = find_sweep_file(args.name, extra)
    if path is not None:
        check_sweep_file(path)
    elif args.app == "workbench.cli":
        dirs = sweep_dirs(extra)
        known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
        refuse(PROG, f"no sweep named {args.name!r} in {', '.join(map(str, dirs))}; available: {', '.join(known)}")


def _secret_overrides(extra: list[str]) -> list[str]:
    return [arg for arg in extra if scrub_text(arg) != arg]


def _validate(cmd: list[str], env: dict[str, str], name: str) -> int:
    """The workers' own validation, once: a dry run that creates the study and starts no trial."""
    check = subprocess.run(cmd + ["hydra.sweeper.dry_run=true"], env=env, stderr=subprocess.PIPE, text=True)
    if check.returncode == 0:
        sys.stderr.write(check.stderr)
        return 0
    lines = [line for line in check.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    ours = [line for line in lines if line.startswith("workbench train: error: ")]
    if ours:
        reason = ours[-1].removeprefix("workbench train: error: ")
    elif any(line.startswith("Traceback") for line in lines):  # an app that is not ours crashed
        reason = lines[-1]
    else:  # Hydra's own report of an error: a message over several lines
        reason = flatten("\n".join(lines)) or f"exit status {check.returncode}"
    print(f"{PROG}: error: the sweep {name!r} is invalid: {scrub_text(reason)}; no trial started", file=sys.stderr)
    return EXIT_REFUSED


def _devices(args: argparse.Namespace) -> list[str] | None:
    if args.devices is None:
        return None
    try:
        devices = parse_devices(args.devices)
        check_available(devices)
    except DeviceError as err:
        refuse(PROG, str(err))
    return devices


def _worker_launch(cmd: list[str], env: dict[str, str], devices: list[str] | None,
                   worker: int) -> tuple[list[str], dict[str, str]]:
    """Worker ``worker``'s command line and environment: its number and, with --devices, its device."""
    env = {**env, ENV_WORKER: str(worker)}
    if devices is None:
        return cmd, env
    device = worker_device(devices, worker, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return cmd + [device.override], {**env, **device.env}


def sweep_main(argv: list[str]) -> int:
    args, extra = _parser().parse_known_args(argv)
    storage = _storage_url(args)
    try:
        _check_arguments(args, extra)
        if storage or os.environ.get(ENV_STORAGE):
            check_storage(resolve_storage(storage, args.study_name or args.name, Path.cwd()))
    except SweepConfigError as err:
        refuse(PROG, f"{one_line(err)}; no trial started")
    devices = _devices(args)
    started = time.time()
    env = {**os.environ, ENV_STARTED: repr(started)}  # the workers' status lines count from here
    if storage:
        env[ENV_STORAGE] = storage
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core a worker, numpy included
        env.setdefault(var, "1")
    secret = _secret_overrides(extra) if args.app == "workbench.cli" else []
    if secret:  # a worker's command line is visible to every user of the machine; its environment is not
        from workbench.cli import ENV_OVERRIDES

        env[ENV_OVERRIDES] = json.dumps(secret)
    cmd = worker_command(args.app, args.name, args, [arg for arg in extra if arg not in secret])
    # Validate once (a bad sweep file: one line, exit 2) and create the study; with worker 0's
    # device, so a device the config refuses is caught here too.
    launches = [_worker_launch(cmd, env, devices, i) for i in range(args.workers)]
    if _validate(*launches[0], args.name):
        return EXIT_INVALID
    supervised = stop_with_parent(os.getpid())

    if devices is not None:
        print("devices: " + ", ".join(f"worker {i} on {devices[i % len(devices)]}" for i in range(args.workers)))
    workers = [subprocess.Popen(worker_cmd, env=worker_env, preexec_fn=supervised)
               for worker_cmd, worker_env in launches]
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
        try:  # the workers print no last line of their own: this is the sweep's
            study = load_study(resolve_storage(storage, args.study_name or args.name, Path.cwd()),
                               args.study_name or args.name)
            print(progress_line(study, args.n_trials or study.user_attrs.get("n_trials"), started))
        except Exception:
            pass
        print("workbench sweep: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED

    study_name = args.study_name or args.name
    spec = resolve_storage(storage, study_name, Path.cwd())
    try:
        study = load_study(spec, study_name)
    except Exception as exc:  # e.g. the storage went away: the trials are still stored
        print(f"{PROG}: no summary: {one_line(exc)}", file=sys.stderr)
        return EXIT_UNFINISHED
    if wants_reevaluation(study, args.n_trials):  # in the parent, once the workers are done
        subprocess.run(cmd + ["hydra.sweeper.reevaluate_only=true", f"torch_threads={args.workers}"], env=env)
    # the sweep's last status line, once (the workers leave it to this summary)
    print(summary_table(study, args.n_trials or study.user_attrs.get("n_trials"), started=started))
    path = write_csv(study, summary_csv_path(spec.path, study_name, study_sweep_dir(study_name), Path.cwd()))
    print(f"summary written to {path}")
    return sweep_exit_code(study, args.n_trials, codes)


def wants_reevaluation(study, n_trials: int | None) -> bool:
    """The sweep file asks for it, the budget is spent and it has not been done yet."""
    from workbench.sweep.reevaluate import REEVAL_ATTR

    asked = (study.user_attrs.get("reevaluate") or {}).get("top_k")
    return bool(asked) and REEVAL_ATTR not in study.user_attrs and budget_reached(study, n_trials)


def _reevaluate_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(
        prog="workbench reevaluate",
        description="Retrain a study's top-K configurations and its defaults on fresh seeds, as one population.")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="Optuna RDB URL or journal file path (default: sweeps_db/<study>.journal)")
    p.add_argument("--top-k", type=int, help="configurations to re-evaluate (default: the sweep file's, else 3)")
    p.add_argument("--seeds", type=int, help="fresh seeds per configuration (default: the sweep file's)")
    p.add_argument("--budget", type=int, help="frames per member (default: the sweep file's, else the config's own "
                   "agent.training_max_steps)")
    p.add_argument("--app", default="workbench.cli", help=argparse.SUPPRESS)  # tests: a fake app module
    return p


def reevaluate_main(argv: list[str]) -> int:
    """``workbench reevaluate <study>``: rerun the sweep's own command in re-evaluation mode."""
    prog = "workbench reevaluate"
    args = _reevaluate_parser().parse_args(argv)
    for flag, value in (("--top-k", args.top_k), ("--seeds", args.seeds), ("--budget", args.budget)):
        if value is not None and value < 1:
            refuse(prog, f"{flag}={value} is not allowed: must be >= 1")
    spec = resolve_storage(args.storage, args.study, Path.cwd())
    if spec.path is not None and not spec.path.is_file():
        refuse(prog, f"no study storage at {spec.path} (give --storage)")
    try:
        check_storage(spec)
        study = load_study(spec, args.study)
    except Exception as exc:
        refuse(prog, f"cannot open study {args.study!r} in {spec.redacted}: {one_line(exc)}")
    invocation = study.user_attrs.get("invocation")
    if not invocation:
        refuse(prog, f"study {args.study!r} holds no sweep invocation (made by an older workbench or by hand): "
                     "rerun it with `workbench train -m +sweep=<name> hydra.sweeper.reevaluate_only=true`")
    cmd = [sys.executable, "-m", args.app] + (["train"] if args.app == "workbench.cli" else [])
    cmd += ["-m", *invocation, f"hydra.sweeper.study_name={format_value(args.study)}",
            f"hydra.sweep.dir={format_value(study_sweep_dir(args.study))}", "hydra.sweeper.reevaluate_only=true"]
    for key, value in (("top_k", args.top_k), ("seeds", args.seeds), ("budget", args.budget)):
        if value is not None:
            cmd.append(f"hydra.sweeper.reevaluate.{key}={value}")
    env = {**os.environ, ENV_STORAGE: spec.url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, env=env)
    return EXIT_DONE if done.returncode == 0 else EXIT_UNFINISHED


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
