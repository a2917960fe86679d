"""Sweep throughput: trials per hour at the same per-trial budget, population trials against one trial
per process and against Optuna driving SB3; and the cost of a 5-seed trial against a 1-seed trial.

    python -m bench.sweep_trials [--quick] [--rounds R] [--trials N] [--iterations I] [--populations P ...]
                                 [--report] [--breakdown] [--iteration-cost]

Two sweeps, each trial trained to the same short fixed budget with the pruner off (every trial trains
its whole budget) and W&B offline (the default):

- ``halfcheetah``: ``sweeps/halfcheetah.yaml``'s search space with the agent configured to the CleanRL
  HalfCheetah workload (``bench.workloads.HALFCHEETAH_CLEANRL`` through ``bench.peers.ours.overrides_for``:
  1 env x 2048 steps, 10 epochs x 32 minibatches of 64, 64x64 tanh, lr 3e-4), 2 iterations per trial,
  then the sweep's own final evaluation (4 envs, 1000 steps, deterministic).
- ``ppo_knobs``: the default sweep on the torch pendulum (1024 envs x 32 steps), 3 iterations per trial.

Modes, one ``workbench sweep`` command each (a fresh study in a scratch directory):

- ``population_P``: ``workbench sweep <name> --workers 2 --population P`` (at least 2 x P trials, so
  both workers' populations fill: trials/hour is a rate);
- ``one_per_process``: ``workbench sweep <name> --workers 2`` (today's one trial per process);
- ``sb3`` (halfcheetah only): 2 processes, each running ``optuna`` ``study.optimize`` (N/2 trials) on
  one shared journal-file study; a trial is SB3's PPO configured as ``bench.peers.sb3`` for the same
  workload with the sampled ``clip_range`` (e_clip), ``gae_lambda`` (tau) and ``log_std_init``
  (actor_logstd), same ranges and TPE settings as the sweep file, trained on the same budget and then
  evaluated as ours is (4 envs, one deterministic episode each, observations normalised with the
  training statistics), 1 torch thread per process;
- ``seeds5`` (halfcheetah only): ``one_per_process`` with ``hydra.sweeper.objective.seeds=[0,1,2,3,4]``:
  each trial trains its 5 seeds side by side as one population.

Trials/hour = trials / (first trial start .. last trial end, the storage's timestamps); the whole
command's wall time beside it (adds the fixed start-up: ``workbench sweep``'s validating dry run,
worker start and preload, the summary). CPU time, the steadier figure on a shared machine: the
command's whole process tree (user + system, every worker included) per trial, and the trials' own
(``TreeCpu`` samples the tree's CPU seconds every 0.5 s; the CPU spent from the first trial's start to
the last trial's end, without the fixed start-up). Each round runs every mode of a sweep once, in an
order that rotates round by round; ratios are taken within a round, medians over rounds. The 5-seed
cost is seeds5's trials' own CPU seconds per trial over one_per_process's (the same round), with the
median trial durations beside it.

``--iteration-cost`` measures, in this process on one torch thread, one training iteration of a
1-seed and of a 5-seed trial's agent in turn (round by round, the order alternating), then one
evaluation of each: the 5-seed cost without a trial's fixed costs (build, W&B runs, start-up).

``--breakdown`` measures, in this process on one torch thread and interleaved, where one HalfCheetah
trial's CPU time goes (build, rollouts, updates, evaluation) as a member of a population of P, as a
one-trial-per-process trial and as an SB3 trial, beside the same env steps alone; it adds that to the
JSON (``--quick`` runs it too, tiny).

Writes bench/results/sweep_trials.json (``--quick``: sweep_trials_quick.json, tiny budgets, nothing in
BENCHMARKS.md) and replaces the "Sweep throughput" section of BENCHMARKS.md (after the population
comparison above, bench/results/sweep_trials_population_sizes.json, if there); ``python -m bench.report``
rewrites BENCHMARKS.md without that section: ``--report`` puts it back from the JSON without measuring.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECTION_BEGIN = "<!-- bench.sweep_trials: begin (written by python -m bench.sweep_trials) -->"
SECTION_END = "<!-- bench.sweep_trials: end -->"

SWEEPS = ("halfcheetah", "ppo_knobs")
WORKERS = 2
SEEDS = [0, 1, 2, 3, 4]
# P of the full run, chosen by `python -m bench.sweep_trials --sweeps halfcheetah --modes population
# --populations 4 8 --rounds 1 --trials 16 --out bench/results/sweep_trials_population_sizes.json`
DEFAULT_P = 8
PILOT = RESULTS / "sweep_trials_population_sizes.json"
# every sweep run ends its trials on the budget: no pruner, no re-evaluation at the end
COMMON = ["hydra.sweeper.pruner=null", "hydra.sweeper.reevaluate.top_k=0"]
# TPE as sweeps/halfcheetah.yaml configures it (the SB3 study samples with the same settings)
TPE = {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": 16}
# the SB3 trial's knobs: our name, SB3's name, the range in sweeps/halfcheetah.yaml
SB3_KNOBS = (("agent.e_clip", "clip_range", "clip", (0.05, 0.4)), ("agent.tau", "gae_lambda", "lam", (0.8, 1.0)),
             ("agent.model.actor.actor_logstd", "log_std_init", "init_logstd", (-3.0, 0.0)))


# ---------------------------------------------------------------------------------------- settings
def halfcheetah_workload(quick: bool):
    from bench.workloads import HALFCHEETAH_CLEANRL
    # quick: the same settings on 256-step iterations, 2 epochs (minibatches of 8)
    return replace(HALFCHEETAH_CLEANRL, num_steps=256, epochs=2) if quick else HALFCHEETAH_CLEANRL


def sweep_settings(name: str, quick: bool, iterations: int | None = None) -> dict:
    """The overrides that make ``name``'s trials: budget (``iterations`` per trial, default 2 on
    halfcheetah and 3 on ppo_knobs; --quick 1 and 2), workload, evaluation."""
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations={iterations}: a trial trains at least 1 iteration")
    if name == "halfcheetah":
        from bench.peers.ours import overrides_for
        w = halfcheetah_workload(quick)
        iterations = iterations or (1 if quick else 2)
        searched = {k for k, *_ in SB3_KNOBS} | {"agent.advantage_normalization.use_ema"}
        # the seed and torch threads are the sweep's (trial seed, torch_threads=1 per worker); searched
        # knobs stay searched (a fixed override would take them out of the search)
        fixed = [o for o in overrides_for(w, 0)
                 if o.split("=", 1)[0] not in searched | {"seed", "torch_threads"}]
        eval_steps = 50 if quick else 1000
        overrides = fixed + [f"agent.training_max_steps={iterations * w.steps_per_iteration}",
                             f"agent.evaluator.max_eval_steps={eval_steps}"]
        return {"overrides": overrides + COMMON, "iterations": iterations,
                "steps_per_trial": iterations * w.steps_per_iteration, "eval_envs": 4, "eval_steps": eval_steps,
                "workload": w.name, "description": w.description + (" (quick: 256 steps, 2 epochs)" if quick else "")}
    if name == "ppo_knobs":
        envs = 64 if quick else 1024
        iterations = iterations or (2 if quick else 3)
        steps = iterations * envs * 32
        overrides = [f"env.num_envs={envs}", f"agent.training_max_steps={steps}"]
        if quick:
            overrides += ["agent.batch_size=512", "agent.evaluator.num_envs=8", "agent.evaluator.max_eval_steps=50"]
        return {"overrides": overrides + COMMON, "iterations": iterations, "steps_per_trial": steps,
                "workload": "pendulum", "description": f"torch Pendulum, {envs} envs x 32 steps, conf/tuning/pendulum.yaml"}
    raise ValueError(name)


def check_cleanrl_config(quick: bool) -> dict:
    """The halfcheetah trial config (the sweep file + the overrides) against the CleanRL workload:
    what bench.peers.ours sets in code (networks, observation normalisation) must hold here too."""
    from omegaconf import OmegaConf

    from bench.compose import compose_config
    from bench.peers.ours import layers_for
    w = halfcheetah_workload(quick)
    cfg = compose_config(["+sweep=halfcheetah", *[o for o in sweep_settings("halfcheetah", quick)["overrides"]
                                                  if not o.startswith("hydra.")]])
    a = cfg.agent
    got = {"num_envs": cfg.env.num_envs, "num_steps": a.num_steps, "batch_size": a.batch_size,
           "epochs": a.num_mini_epochs, "lr": a.model.actor_optimizer.lr, "critic_lr": a.model.critic_optimizer.lr,
           "gamma": a.gamma, "grad_clip": a.gradient_clip_val, "entropy_coef": a.entropy_coef}
    want = {"num_envs": w.num_envs, "num_steps": w.num_steps, "batch_size": w.minibatch_size, "epochs": w.epochs,
            "lr": w.lr, "critic_lr": w.lr, "gamma": w.gamma, "grad_clip": w.grad_clip, "entropy_coef": 0.0}
    for container in (a.model.actor.mu_model, a.model.critic):
        model = container.models[0]
        got.setdefault("layers", []).append(OmegaConf.to_container(model.layers))
        got.setdefault("normalize_obs", []).append(bool(model.normalize_obs))
    want["layers"], want["normalize_obs"] = [layers_for(w)] * 2, [w.normalize_obs] * 2
    if got != want:
        raise SystemExit(f"the halfcheetah sweep's trial config is not the CleanRL workload: {got} != {want}")
    return got


# ---------------------------------------------------------------------------------------- one run
def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("WORKBENCH_SWEEP_STORAGE", None)
    env["WANDB_MODE"] = "offline"  # as by default (logger.mode=offline), whatever the caller has set
    return env


class TreeCpu:
    """Samples the CPU seconds (user + system) of process trees every ``interval`` seconds in a
    thread, so that the CPU time spent between two instants (the first trial's start and the last
    trial's end) can be read afterwards: the trials' CPU without the command's start-up and end.
    Each process counts its own time, as last seen (a worker that has exited keeps its figure);
    a process that lives less than ``interval`` may be missed."""

    def __init__(self, pids: list[int], interval: float = 0.5):
        import threading

        import psutil
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval, self.samples = interval, []
        self._seen: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _total(self) -> float:
        import psutil
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    with proc.oneshot():
                        t, key = proc.cpu_times(), (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                self._seen[key] = t.user + t.system
        return sum(self._seen.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._total()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """CPU seconds at ``when``, interpolated between the samples around it."""
        before = [s for s in self.samples if s[0] <= when] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= when] or self.samples[-1:]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 if t1 <= t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def summarise(trials, started: float, ended: float, cpu: float, sampler: TreeCpu | None = None) -> dict:
    """Figures of one run from its study's trials (FrozenTrial), the command's start/end/CPU and,
    with ``sampler``, the CPU time between the first trial's start and the last trial's end."""
    done = [t for t in trials if t.datetime_start and t.datetime_complete]
    starts = [t.datetime_start.timestamp() for t in done]
    ends = [t.datetime_complete.timestamp() for t in done]
    span = max(ends) - min(starts)
    durations = [e - s for s, e in zip(starts, ends)]
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    n, wall = len(done), ended - started
    out = {"trials": n, "states": states, "span_s": span, "command_wall_s": wall, "cpu_s": cpu,
           "cpu_s_per_trial": cpu / n, "trials_per_hour_span": 3600 * n / span, "trials_per_hour_wall": 3600 * n / wall,
           "trials_per_cpu_hour": 3600 * n / cpu, "trial_duration_s": sorted(durations),
           "trial_duration_s_median": statistics.median(durations),
           "first_trial_start_after_s": min(starts) - started, "after_last_trial_s": ended - max(ends)}
    if sampler is not None and len(sampler.samples) >= 2:
        span_cpu = sampler.at(max(ends)) - sampler.at(min(starts))
        # the trials' own CPU time: without the dry run, the workers' start-up and the summary
        out.update({"span_cpu_s": span_cpu, "span_cpu_s_per_trial": span_cpu / n,
                    "trials_per_span_cpu_hour": 3600 * n / span_cpu,
                    "span_cores_used": span_cpu / span})  # of the 2 the workers could use
    return out


def run_workbench_sweep(name: str, settings: dict, trials: int, population: int | None = None,
                        seeds: list[int] | None = None, log=print) -> dict:
    from workbench.sweep.storage import load_study, resolve_storage
    with TemporaryDirectory(prefix=f"sweep_trials_{name}_") as tmp:
        cmd = [sys.executable, "-m", "workbench.cli", "sweep", name, "--workers", str(WORKERS),
               "--n-trials", str(trials)]
        if population:
            cmd += ["--population", str(population)]
        cmd += settings["overrides"]
        if seeds:
            cmd.append(f"hydra.sweeper.objective.seeds=[{','.join(map(str, seeds))}]")
        cpu0, started = _children_cpu(), time.time()
        proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = TreeCpu([proc.pid])
        text = proc.communicate()[0]
        ended = time.time()
        sampler.stop()
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{text[-4000:]}")
        study = load_study(resolve_storage(None, name, Path(tmp)), name)
        out = summarise(study.get_trials(deepcopy=False), started, ended, cpu, sampler)
        out["population_jobs"] = len({t.user_attrs["population_worker"] for t in study.trials
                                      if "population_worker" in t.user_attrs})
    out["command"] = "workbench " + shlex.join(cmd[3:])
    return out


# ---------------------------------------------------------------------------------------- SB3 + Optuna
def sb3_evaluate(model, base, settings: dict) -> float:
    """An SB3 trial's score, as our evaluator scores a trial: ``eval_envs`` envs, one deterministic
    episode each (at most ``eval_steps`` steps), observations normalised with the training
    statistics, raw rewards."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    eval_env = VecNormalize(DummyVecEnv([lambda: gym.make(base.gym_id, max_episode_steps=settings["eval_steps"])
                                         for _ in range(settings["eval_envs"])]),
                            training=False, norm_obs=base.normalize_obs, norm_reward=False, clip_obs=10.0)
    eval_env.obs_rms = model.get_env().obs_rms
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=settings["eval_envs"], deterministic=True)
    eval_env.close()
    return float(mean)


def sb3_worker(storage: str, study_name: str, n_trials: int, quick: bool, iterations: int | None = None) -> None:
    """One of the SB3 stack's 2 processes: ``study.optimize`` on the shared journal-file study."""
    warnings.filterwarnings("ignore")
    import optuna
    import torch
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from bench.peers.sb3 import Trainer
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = sweep_settings("halfcheetah", quick, iterations)
    base = halfcheetah_workload(quick)
    study = optuna.create_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(storage)),
                                sampler=optuna.samplers.TPESampler(**TPE), direction="maximize", load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        knobs = {field: trial.suggest_float(sb3_name, *bounds) for _, sb3_name, field, bounds in SB3_KNOBS}
        trainer = Trainer(replace(base, **knobs), seed=trial.number)
        trainer.iterate(settings["iterations"])
        value = sb3_evaluate(trainer.model, base, settings)
        trainer.close()
        return value

    study.optimize(objective, n_trials=n_trials)


def run_sb3(trials: int, quick: bool, iterations: int | None = None, log=print) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    per_worker = [trials // WORKERS + (i < trials % WORKERS) for i in range(WORKERS)]
    with TemporaryDirectory(prefix="sweep_trials_sb3_") as tmp:
        storage = str(Path(tmp) / "sb3.journal")
        cmds = [[sys.executable, "-m", "bench.sweep_trials", "--sb3-worker", storage, "sb3", str(n)]
                + (["--quick"] if quick else []) + (["--iterations", str(iterations)] if iterations else [])
                for n in per_worker]
        cpu0, started = _children_cpu(), time.time()
        procs = [subprocess.Popen(c, cwd=ROOT, env={**_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
        sampler = TreeCpu([p.pid for p in procs])
        outputs = [p.communicate()[0] for p in procs]
        ended = time.time()
        sampler.stop()
        cpu = _children_cpu() - cpu0
        for p, text in zip(procs, outputs):
            if p.returncode != 0:
                raise SystemExit(f"an SB3 worker failed ({p.returncode}):\n{text[-4000:]}")
        study = optuna.load_study(study_name="sb3", storage=JournalStorage(JournalFileBackend(storage)))
        out = summarise(study.get_trials(deepcopy=False), started, ended, cpu, sampler)
    out["command"] = " & ".join("python -m bench.sweep_trials " + shlex.join(c[3:]) for c in cmds)
    return out


# ---------------------------------------------------------------------------------------- rounds
MODES = ("population", "one_per_process", "sb3", "seeds5")


def modes_for(name: str, populations: list[int], sb3: bool, wanted=MODES) -> list[str]:
    modes = [f"population_{p}" for p in populations] + ["one_per_process"]
    if name == "halfcheetah":
        modes += (["sb3"] if sb3 else []) + ["seeds5"]
    return [m for m in modes if m.split("_")[0] in wanted or m in wanted]


def run_mode(name: str, mode: str, settings: dict, trials: int, seed_trials: int, quick: bool, log) -> dict:
    if mode == "sb3":
        return run_sb3(trials, quick, settings["iterations"], log)
    if mode == "seeds5":
        return run_workbench_sweep(name, settings, seed_trials, seeds=SEEDS, log=log)
    if not mode.startswith("population_"):
        return run_workbench_sweep(name, settings, trials, log=log)
    # enough trials to fill every worker's population once: trials/hour is a rate, and a
    # population left half empty measures the empty slots, not the population
    population = int(mode.split("_")[1])
    return run_workbench_sweep(name, settings, max(trials, WORKERS * population), population=population, log=log)


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


RATE_FIELDS = (("span", "trials_per_hour_span"), ("wall", "trials_per_hour_wall"), ("cpu", "trials_per_cpu_hour"),
               ("span_cpu", "trials_per_span_cpu_hour"))
MEDIAN_FIELDS = ("trials_per_hour_span", "trials_per_hour_wall", "trials_per_cpu_hour", "cpu_s_per_trial",
                 "trial_duration_s_median", "command_wall_s", "span_cpu_s_per_trial", "trials_per_span_cpu_hour",
                 "span_cores_used")


def derive(sweep: dict) -> None:
    """Per-round ratios (population over the other modes; seeds5 over one_per_process) and their
    medians over rounds: in trials/hour over the span and over the command's wall time, and in
    trials per CPU-hour (the whole command's CPU time, and the CPU time within the span)."""
    rounds, med = sweep["rounds"], statistics.median

    def per_round(a: str, b: str, field: str, invert: bool = False) -> list[float] | None:
        if not all(field in r[a] and field in r[b] for r in rounds):
            return None  # (a result from before the field was measured)
        return [(r[b][field] / r[a][field]) if invert else (r[a][field] / r[b][field]) for r in rounds]

    pops = [m for m in sweep["modes"] if m.startswith("population_")]
    ratios: dict[str, dict] = {}
    for p in pops:
        smaller = [q for q in pops if int(q.split("_")[1]) < int(p.split("_")[1])]
        for other in smaller + [m for m in sweep["modes"] if m in ("one_per_process", "sb3")]:
            entry = {}
            for k, field in RATE_FIELDS:
                values = per_round(p, other, field)
                if values is not None:
                    entry[f"{k}_per_round"], entry[f"{k}_median"] = values, med(values)
            ratios[f"{p}_over_{other}"] = entry
    sweep["ratios"] = ratios
    if "seeds5" in sweep["modes"] and "one_per_process" in sweep["modes"]:
        cost = {"seeds": SEEDS}
        for k, field, invert in (("duration", "trial_duration_s_median", False), ("cpu", "cpu_s_per_trial", False),
                                 ("span_cpu", "span_cpu_s_per_trial", False), ("span", "trials_per_hour_span", True)):
            values = per_round("seeds5", "one_per_process", field, invert)
            if values is not None:
                cost[f"{k}_ratio_per_round"], cost[f"{k}_ratio_median"] = values, med(values)
        sweep["seed_cost"] = cost
    sweep["medians"] = {m: {f: med([r[m][f] for r in rounds]) for f in MEDIAN_FIELDS
                            if all(f in r[m] for r in rounds)} for m in sweep["modes"]}


def run_sweep(name: str, populations: list[int], rounds: int, trials: int, seed_trials: int, quick: bool,
              sb3: bool, wanted=MODES, iterations: int | None = None, log=print) -> dict:
    settings = sweep_settings(name, quick, iterations)
    modes = modes_for(name, populations, sb3, wanted)
    out = {"sweep": name, "settings": settings, "trials": trials, "workers": WORKERS, "modes": modes,
           "rounds": []}
    if "seeds5" in modes:
        out["seed_trials"] = seed_trials
    for r in range(rounds):
        results = {}
        for mode in rotate(modes, r):
            results[mode] = run_mode(name, mode, settings, trials, seed_trials, quick, log)
            e = results[mode]
            log(f"[{name}] round {r + 1}/{rounds} {mode}: {e['trials']} trials, {e['trials_per_hour_span']:,.0f}/h "
                f"(span {e['span_s']:.1f}s), {e['trials_per_hour_wall']:,.0f}/h (wall {e['command_wall_s']:.1f}s), "
                f"{e['cpu_s_per_trial']:.1f} CPU s/trial, trial {e['trial_duration_s_median']:.1f}s", flush=True)
        out["rounds"].append({m: results[m] for m in modes})
    derive(out)
    return out


# ---------------------------------------------------------------------------------------- breakdown
def _member_knobs(rng, n: int) -> list[dict]:
    """n draws of the three knobs the SB3 trials sample (same ranges), for members that differ."""
    return [{ours: rng.uniform(*bounds) for ours, _, _, bounds in SB3_KNOBS} for _ in range(n)]


def trial_agent(size: int, quick: bool, seed: int, seeds_of_one_trial: bool = False):
    """The agent of `size` HalfCheetah trials of the sweep (size 1: the single-run agent a
    one-trial-per-process trial builds), each with its own draw of the knobs; with
    ``seeds_of_one_trial``, one trial's `size` seeds (one draw for all)."""
    import random

    from omegaconf import OmegaConf

    from bench.compose import compose_config
    from workbench.train import build_agent, build_population
    from workbench.train_population import member_configs
    settings = sweep_settings("halfcheetah", quick)
    overrides = ["+sweep=halfcheetah", *[o for o in settings["overrides"] if not o.startswith("hydra.")]]
    rng = random.Random(seed)
    if size == 1:
        cfg = compose_config(overrides + [f"seed={seed}"])
        for key, value in _member_knobs(rng, 1)[0].items():
            OmegaConf.update(cfg, key, value, merge=False)
        return build_agent(cfg, None)
    cfg = compose_config(overrides + [f"population.seeds=[{','.join(str(seed + i) for i in range(size))}]"])
    members = member_configs(cfg)
    draws = _member_knobs(rng, 1) * size if seeds_of_one_trial else _member_knobs(rng, size)
    for member, knobs in zip(members, draws):  # trials differ, as a sweep's do; seeds share their trial's
        for key, value in knobs.items():
            OmegaConf.update(member, key, value, merge=False)
    return build_population(members, [None] * size)


def cost_ours(size: int, quick: bool, seed: int, seeds_of_one_trial: bool = False) -> dict:
    """CPU seconds of `size` HalfCheetah trials of the sweep trained as one agent (size 1: the
    single-run agent a one-trial-per-process trial builds), per phase, per trial; with
    ``seeds_of_one_trial``, of one trial's `size` seeds (the same knobs), for the whole trial."""
    from bench.population import Timed
    settings = sweep_settings("halfcheetah", quick)
    t0 = time.process_time()
    agent = trial_agent(size, quick, seed, seeds_of_one_trial)
    build = time.process_time() - t0
    collect = agent.collect_rollout = Timed(agent.collect_rollout)
    update = agent.optimize = Timed(agent.optimize)
    t1, iteration_s = time.process_time(), []
    for _ in range(settings["iterations"]):
        start = time.process_time()
        agent.train_iteration()
        iteration_s.append(time.process_time() - start)
    train = time.process_time() - t1
    t2 = time.process_time()
    agent.evaluate()  # the trial's final evaluation (every member's, at once)
    evaluate = time.process_time() - t2
    out = {"build": build, "collect": sum(collect.cpu), "update": sum(update.cpu),
           "train_other": train - sum(collect.cpu) - sum(update.cpu), "evaluate": evaluate}
    out = {k: v / (1 if seeds_of_one_trial else size) for k, v in out.items()}
    out["total"] = sum(out.values())
    if size > 1 and not seeds_of_one_trial:
        # the evaluation of one member (the others not due) against all of them
        t3 = time.process_time()
        agent.evaluate([0])
        out["evaluate_one_member_of_population_s"] = time.process_time() - t3
        out["evaluate_all_members_s"] = evaluate
        # an iteration with half the slots empty (closed trials, no next trial to refill them with)
        # against the last one with every slot training
        for member in range(size // 2, size):
            agent.remove_member(member)
        t4 = time.process_time()
        agent.train_iteration()
        out["iteration_half_the_slots_empty_s"] = time.process_time() - t4
        out["iteration_every_slot_training_s"] = iteration_s[-1]
    for env in (agent.env, agent.evaluator.env if agent.evaluator else None):
        if env is not None and hasattr(env, "close"):
            env.close()
    return out


def cost_sb3(quick: bool, seed: int) -> dict:
    """CPU seconds of one SB3 trial (as the Optuna + SB3 mode's): build, rollouts, updates, evaluation."""
    import random

    from bench.peers.sb3 import Trainer
    from bench.population import Timed
    settings, base = sweep_settings("halfcheetah", quick), halfcheetah_workload(quick)
    knobs = _member_knobs(random.Random(seed), 1)[0]
    t0 = time.process_time()
    trainer = Trainer(replace(base, **{field: knobs[ours] for ours, _, field, _ in SB3_KNOBS}), seed=seed)
    build = time.process_time() - t0
    collect = trainer.model.collect_rollouts = Timed(trainer.model.collect_rollouts)
    update = trainer.model.train = Timed(trainer.model.train)
    t1 = time.process_time()
    trainer.iterate(settings["iterations"])
    train = time.process_time() - t1
    t2 = time.process_time()
    sb3_evaluate(trainer.model, base, settings)
    evaluate = time.process_time() - t2
    trainer.close()
    out = {"build": build, "collect": sum(collect.cpu), "update": sum(update.cpu),
           "train_other": train - sum(collect.cpu) - sum(update.cpu), "evaluate": evaluate}
    out["total"] = sum(out.values())
    return out


def cost_env(quick: bool, seed: int) -> dict:
    """CPU seconds of the env steps one trial takes, alone (random actions, gymnasium HalfCheetah):
    the training budget on one env and the evaluation's eval_envs x eval_steps."""
    import gymnasium as gym
    settings, w = sweep_settings("halfcheetah", quick), halfcheetah_workload(quick)
    env = gym.make(w.gym_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(1000)]
    t0 = time.process_time()
    for i in range(settings["steps_per_trial"] + settings["eval_envs"] * settings["eval_steps"]):
        _, _, terminated, truncated, _ = env.step(actions[i % 1000])
        if terminated or truncated:
            env.reset()
    env.close()
    return {"total": time.process_time() - t0}


def run_breakdown(population: int, rounds: int, quick: bool, sb3: bool, log=print) -> dict:
    """Per-trial CPU seconds by phase, in this process on one torch thread, interleaved round by
    round: a trial in a population of P (its share of the batch), a one-trial-per-process trial,
    an SB3 trial, and the env steps alone."""
    import contextlib

    import torch
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    kinds = [f"population_{population}", "one_per_process"] + (["sb3"] if sb3 else []) + ["seeds5", "env_steps_only"]
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with contextlib.redirect_stdout(sys.stderr):  # imports and first-call costs stay out of the rounds
        cost_ours(2, True, seed=0)
        cost_ours(1, True, seed=0)
        if sb3:
            cost_sb3(True, seed=0)
    for r in range(rounds):
        for kind in rotate(kinds, r):
            with contextlib.redirect_stdout(sys.stderr):
                if kind == "sb3":
                    runs[kind].append(cost_sb3(quick, seed=r))
                elif kind == "env_steps_only":
                    runs[kind].append(cost_env(quick, seed=r))
                elif kind == "seeds5":
                    runs[kind].append(cost_ours(len(SEEDS), quick, seed=r, seeds_of_one_trial=True))
                else:
                    runs[kind].append(cost_ours(population if kind.startswith("population_") else 1, quick, seed=r))
        log(f"[breakdown] round {r + 1}/{rounds}: " + ", ".join(f"{k} {runs[k][-1]['total']:.2f}" for k in kinds)
            + " CPU s per trial", flush=True)
    med = statistics.median
    out = {"population": population, "rounds": rounds, "threads": 1, "per_round": runs,
           "median": {k: {f: med([v[f] for v in vs]) for f in vs[0]} for k, vs in runs.items()}}
    ratios = {}
    for k in [k for k in ("one_per_process", "sb3") if k in kinds]:
        ratios[f"{kinds[0]}_over_{k}"] = med([b["total"] / a["total"] for a, b in zip(runs[kinds[0]], runs[k])])
    out["ratio_of_trials_per_cpu_second"] = ratios
    out["seeds5_over_one_per_process"] = med([b["total"] / a["total"]
                                              for a, b in zip(runs["one_per_process"], runs["seeds5"])])
    return out


def run_iteration_cost(rounds: int, quick: bool, log=print) -> dict:
    """CPU seconds of one training iteration (and of its rollout and update) of a 1-seed trial's
    agent and of a 5-seed trial's, the two agents built once and stepped in turn, round by round
    (the order alternating), in this process on one torch thread; then one evaluation of each.
    Per-round ratios and their medians: the 5-seed cost without a trial's fixed costs."""
    import torch

    from bench.population import Timed
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    agents = {1: trial_agent(1, quick, seed=0), len(SEEDS): trial_agent(len(SEEDS), quick, seed=0, seeds_of_one_trial=True)}
    timers = {}
    for size, agent in agents.items():
        agent.collect_rollout, agent.optimize = Timed(agent.collect_rollout), Timed(agent.optimize)
        timers[size] = agent.collect_rollout, agent.optimize
        agent.train_iteration()  # first calls (lazy layers, allocations) outside the rounds
    per_round = []
    for r in range(rounds):
        costs = {}
        for size in sorted(agents, reverse=bool(r % 2)):
            (collect, update), start = timers[size], time.process_time()
            agents[size].train_iteration()
            costs[size] = {"iteration": time.process_time() - start, "collect": collect.cpu[-1], "update": update.cpu[-1]}
        ratio = {k: costs[len(SEEDS)][k] / costs[1][k] for k in costs[1]}
        per_round.append({"seeds_1": costs[1], f"seeds_{len(SEEDS)}": costs[len(SEEDS)], "ratio": ratio})
        log(f"[iteration cost] round {r + 1}/{rounds}: 1 seed {costs[1]['iteration']:.2f} CPU s, {len(SEEDS)} seeds "
            f"{costs[len(SEEDS)]['iteration']:.2f} CPU s: {ratio['iteration']:.2f}x", flush=True)
    evaluation = {}
    for size, agent in agents.items():
        start = time.process_time()
        agent.evaluate()
        evaluation[f"seeds_{size}"] = time.process_time() - start
    med = statistics.median
    return {"rounds": rounds, "threads": 1, "per_round": per_round,
            "ratio_median": {k: med([r["ratio"][k] for r in per_round]) for k in ("iteration", "collect", "update")},
            "evaluation_s": evaluation, "evaluation_ratio": evaluation[f"seeds_{len(SEEDS)}"] / evaluation["seeds_1"]}


def breakdown_lines(b: dict, settings: dict) -> list[str]:
    m = b["median"]
    phases = ("build", "collect", "update", "train_other", "evaluate", "total")
    lines = ["### Where a HalfCheetah trial's CPU time goes", "",
             f"`{b['command']}`: one trial of the sweep above ({settings['steps_per_trial']:,} training steps, then "
             f"the final evaluation: {settings['eval_envs']} envs x {settings['eval_steps']} steps), CPU seconds "
             f"per trial, in one process on one torch thread, {b['rounds']} interleaved rounds (median). "
             f"Population: one agent of P = {b['population']} trials with different sampled e_clip, tau and "
             "log-std, its costs divided by P; 5 seeds: one trial's 5 seeds as one agent, the whole trial. collect = `collect_rollout` / SB3's `collect_rollouts` (env steps + "
             "policy), update = `optimize` / SB3's `train`; env steps only = the same number of gymnasium "
             "HalfCheetah steps with random actions, no policy.", "",
             "| trial | " + " | ".join(phases) + " |", "|---|" + "---:|" * len(phases)]
    for kind, v in m.items():
        lines.append(f"| {mode_text(kind) if kind in MODE_TEXT or kind.startswith('population_') else 'env steps only'} | "
                     + " | ".join(fmt(v.get(f), 2) for f in phases) + " |")
    lines.append("")
    ratios = ", ".join(f"{mode_text(k.split('_over_')[1])} {v:.2f}x" for k, v in b["ratio_of_trials_per_cpu_second"].items())
    lines += [f"Trials per CPU-second of the population over: {ratios}. A 5-seed trial (its seeds as one "
              f"population) costs {b['seeds5_over_one_per_process']:.2f}x a 1-seed trial here, before the sweep's "
              "per-seed W&B runs, output dirs and checkpoints.", ""]
    pop = m[f"population_{b['population']}"]
    if "evaluate_one_member_of_population_s" in pop:
        lines += [f"Evaluating one member of the population of {b['population']} (`agent.evaluate([0])`, the others "
                  f"not due) takes {pop['evaluate_one_member_of_population_s']:.2f} CPU s, evaluating all of them "
                  f"{pop['evaluate_all_members_s']:.2f} CPU s."
                  + (f" An iteration with half the slots empty (`remove_member`, nothing to refill them with) takes "
                     f"{pop['iteration_half_the_slots_empty_s']:.2f} CPU s, one with every slot training "
                     f"{pop['iteration_every_slot_training_s']:.2f} CPU s." if "iteration_half_the_slots_empty_s" in pop
                     else ""), ""]
    return lines


# ---------------------------------------------------------------------------------------- report
def fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


MODE_TEXT = {"one_per_process": "one trial per process", "sb3": "Optuna + SB3 (2 processes)",
             "seeds5": "one trial per process, 5 seeds per trial"}


def mode_text(mode: str) -> str:
    if mode.startswith("population_"):
        return f"population, P = {mode.split('_')[1]}"
    return MODE_TEXT[mode]


def pilot_lines(pilot: dict) -> list[str]:
    """The population size comparison (``PILOT``) the full run's P was chosen by."""
    lines = ["### Choosing P", "", f"`{pilot['command']}` ({pilot['total_wall_s'] / 60:.1f} min, load average "
             f"{pilot['load_average_at_start'][0]:.1f}):", ""]
    for name, s in pilot["sweeps"].items():
        lines += ["| sweep | P | trials/h (span) | trials/h (command wall) | CPU s / trial |", "|---|---:|---:|---:|---:|"]
        for mode in s["modes"]:
            md = s["medians"][mode]
            lines.append(f"| {name} | {mode.split('_')[1]} | {fmt(md['trials_per_hour_span'])} "
                         f"| {fmt(md['trials_per_hour_wall'])} | {fmt(md['cpu_s_per_trial'], 1)} |")
        lines.append("")
        for key, r in s["ratios"].items():
            a, b = (k.split("_")[1] for k in key.split("_over_"))
            lines.append(f"P = {a} over P = {b}: {r['span_median']:.2f}x trials/h (span), {r['cpu_median']:.2f}x "
                         "in CPU time.")
        lines.append("")
    return lines


def markdown_section(result: dict, pilot: dict | None = None) -> str:
    m = result["machine"]
    lines = [SECTION_BEGIN, "## Sweep throughput", "",
             "Trials per hour at the same per-trial budget (issue 10). Every mode runs the same number of trials "
             "on a fresh study with 2 worker processes (1 torch thread each), the pruner off (every trial trains "
             "its whole budget) and W&B offline: **population, P** = `workbench sweep <name> --workers 2 "
             "--population P` (each worker trains P trials side by side as one batched agent and refills a freed "
             "slot); **one trial per process** = `workbench sweep <name> --workers 2`; **Optuna + SB3** = 2 "
             "processes each running `study.optimize` on one shared journal-file study, a trial being SB3's PPO "
             "(configured as `bench/peers/sb3.py`) with the sampled clip_range, gae_lambda and log_std_init, "
             "trained on the same budget and evaluated as ours (4 envs, one deterministic episode each). "
             "Trials/hour over the span from the first trial's start to the last trial's end (storage timestamps), "
             "and over the whole command's wall time (adds the fixed start-up: the validating dry run, worker "
             "start and preload, the summary). CPU s/trial = the command's whole process tree CPU time over its "
             "trials. Modes rotate round by round; ratios are taken within a round, medians over rounds.", "",
             f"Machine: {m['cpu_model']}, nproc {m['nproc']}, shared with other developers' jobs while this ran "
             f"(1-minute load average {result['load_average_at_start'][0]:.1f} at the start, "
             f"{result.get('load_average_at_end', [float('nan')])[0]:.1f} at the end): wall-clock rates drift "
             "between runs by 30 % or more; the within-round ratios and the CPU column are the measure.", "",
             f"Reproduce: `{result['command']}` ({result['total_wall_s'] / 60:.1f} min).", ""]
    for name, s in result["sweeps"].items():
        st = s["settings"]
        lines += [f"### {name}", "", f"{st['description']}; {st['iterations']} iterations per trial "
                  f"({st['steps_per_trial']:,} env steps), {s['trials']} trials per mode, {len(s['rounds'])} "
                  f"round(s). Overrides: `{' '.join(st['overrides'])}`.", ""]
        head = ["mode", "trials/h (span)", "trials/h (command wall)", "trials' CPU s / trial", "cores used (span)",
                "command CPU s / trial", "median trial s", "command wall s"]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for mode in s["modes"]:
            md = s["medians"][mode]
            lines.append(f"| {mode_text(mode)} | {fmt(md['trials_per_hour_span'])} | {fmt(md['trials_per_hour_wall'])} "
                         f"| {fmt(md.get('span_cpu_s_per_trial'), 1)} | {fmt(md.get('span_cores_used'), 2)} "
                         f"| {fmt(md['cpu_s_per_trial'], 1)} | {fmt(md['trial_duration_s_median'], 1)} "
                         f"| {fmt(md['command_wall_s'], 0)} |")
        lines += ["", "| ratio | trials/h (span), per round | trials/h (command wall) | trials per CPU-hour "
                  "(trials' own) | trials per CPU-hour (command) |", "|---|---:|---:|---:|---:|"]
        for key, r in s["ratios"].items():
            p, other = key.split("_over_")
            lines.append(f"| {mode_text(p)} / {mode_text(other)} | **{r['span_median']:.2f}x** "
                         f"({', '.join(f'{v:.2f}' for v in r['span_per_round'])}) | {r['wall_median']:.2f}x "
                         f"| **{fmt(r.get('span_cpu_median'), 2)}x** | {r['cpu_median']:.2f}x |")
        lines.append("")
        if "seed_cost" in s:
            c, md = s["seed_cost"], s["medians"]
            own = (f"the trials' own CPU seconds per trial {fmt(md['seeds5'].get('span_cpu_s_per_trial'), 1)} vs "
                   f"{fmt(md['one_per_process'].get('span_cpu_s_per_trial'), 1)}: **{c['span_cpu_ratio_median']:.2f}x** "
                   f"(per round {', '.join(f'{v:.2f}' for v in c['span_cpu_ratio_per_round'])}); "
                   if "span_cpu_ratio_median" in c else "")
            lines += [f"5-seed trial (`hydra.sweeper.objective.seeds=[0,1,2,3,4]`, one trial per process, "
                      f"{s['seed_trials']} trials) against a 1-seed trial (the one-trial-per-process run of the same "
                      f"round; target <= 1.5x): {own}median trial duration "
                      f"{fmt(md['seeds5']['trial_duration_s_median'], 1)} s vs "
                      f"{fmt(md['one_per_process']['trial_duration_s_median'], 1)} s, {c['duration_ratio_median']:.2f}x "
                      f"(per round {', '.join(f'{v:.2f}' for v in c['duration_ratio_per_round'])}); the whole "
                      f"command's CPU s per trial {c['cpu_ratio_median']:.2f}x (its fixed start-up spread over "
                      f"{s['seed_trials']} trials against {s['trials']}).", ""]
    if result.get("breakdown") and "halfcheetah" in result["sweeps"]:
        lines += breakdown_lines(result["breakdown"], result["sweeps"]["halfcheetah"]["settings"])
    if pilot:
        lines += pilot_lines(pilot)
    if result.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- main
def _pilot(out: Path) -> dict | None:
    """The P comparison, shown beside a full run's figures (not beside itself)."""
    if not PILOT.exists() or out.resolve() == PILOT.resolve():
        return None
    return json.loads(PILOT.read_text())


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_trials", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, P = 2, 4 trials, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="default 2")
    parser.add_argument("--trials", type=int, default=None, help="trials per mode (default 16); a population mode "
                        "runs at least 2 workers x P")
    parser.add_argument("--seed-trials", type=int, default=None, help="trials of the 5-seed run (default 4)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations per trial (default: halfcheetah 2, ppo_knobs 3); the sweep file's "
                             "own evaluations run on its cadence (halfcheetah: every 10 iterations) and at the end")
    parser.add_argument("--populations", nargs="+", type=int, default=None,
                        help=f"P values (default {DEFAULT_P}: see {PILOT.name})")
    parser.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES),
                        help="run these modes only (e.g. --modes population to compare P values)")
    parser.add_argument("--note", action="append", default=[], help="a note kept in the JSON and the section")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON to write (a measuring run then leaves BENCHMARKS.md alone); with --report, "
                             "the JSON to read")
    parser.add_argument("--breakdown", action="store_true",
                        help="only measure where a HalfCheetah trial's CPU time goes (in this process, per phase, "
                             "interleaved; part of every --quick run) and add it to the JSON")
    parser.add_argument("--iteration-cost", action="store_true",
                        help="only measure, in this process, one training iteration of a 1-seed and of a 5-seed "
                             "HalfCheetah trial's agent, interleaved (--rounds, default 8), and print it as JSON")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild BENCHMARKS.md's section from bench/results/sweep_trials.json")
    parser.add_argument("--sb3-worker", nargs=3, metavar=("STORAGE", "STUDY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.iterations is not None and args.iterations < 1:
        parser.error(f"--iterations {args.iterations}: a trial trains at least 1 iteration")
    if args.sb3_worker:
        storage, study, n = args.sb3_worker
        return sb3_worker(storage, study, int(n), args.quick, args.iterations)
    from bench.population import write_section
    if args.report:
        path = args.out or RESULTS / "sweep_trials.json"
        result = json.loads(path.read_text())
        for s in result["sweeps"].values():
            derive(s)
        result["notes"] = list(dict.fromkeys(result.get("notes", []) + args.note))
        path.write_text(json.dumps(result, indent=2) + "\n")
        write_section(markdown_section(result, _pilot(path)), SECTION_BEGIN, SECTION_END)
        print(f"updated BENCHMARKS.md from {path}")
        return result

    if args.iteration_cost:
        result = run_iteration_cost(args.rounds or (1 if args.quick else 8), args.quick)
        result["command"] = "python -m bench.sweep_trials --iteration-cost" + (" --quick" if args.quick else "") + (
            f" --rounds {args.rounds}" if args.rounds else "") + (f" --out {args.out}" if args.out else "")
        result["load_average"] = os.getloadavg()
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("command", "ratio_median", "evaluation_s", "evaluation_ratio")}, indent=2))
        return result
    from bench.machine import machine_info
    from bench.peers import available
    started = time.perf_counter()
    populations = args.populations or ([2] if args.quick else [DEFAULT_P])
    rounds = args.rounds or (1 if args.quick else 2)
    sb3 = available("sb3")
    out = args.out or RESULTS / ("sweep_trials_quick.json" if args.quick else "sweep_trials.json")
    if args.breakdown:
        result = json.loads(out.read_text())
        result["breakdown"] = run_breakdown(max(populations), args.rounds or (1 if args.quick else 3), args.quick, sb3)
        result["breakdown"]["command"] = "python -m bench.sweep_trials --breakdown" + (
            " --quick" if args.quick else "") + (f" --rounds {args.rounds}" if args.rounds else "") + (
            f" --populations {max(populations)}" if args.populations else "")
        result["breakdown"]["load_average"] = os.getloadavg()
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"added the breakdown to {out}", flush=True)
        if not args.quick and args.out is None:
            write_section(markdown_section(result, _pilot(out)), SECTION_BEGIN, SECTION_END)
            print("updated BENCHMARKS.md (section 'Sweep throughput')", flush=True)
        return result
    trials = args.trials or (4 if args.quick else 16)
    seed_trials = args.seed_trials or (2 if args.quick else 4)
    for p in populations:
        if max(trials, WORKERS * p) % (WORKERS * p):
            print(f"note: {trials} trials are not a multiple of {WORKERS} workers x P={p}: the last population "
                  "jobs run part-filled", flush=True)
    command = "python -m bench.sweep_trials" + (" --quick" if args.quick else "")
    extra = []
    for flag, value, default in (("--rounds", args.rounds, None), ("--trials", args.trials, None),
                                 ("--seed-trials", args.seed_trials, None), ("--iterations", args.iterations, None)):
        if value is not None:
            extra += [flag, str(value)]
    if args.populations:
        extra += ["--populations", *map(str, args.populations)]
    if args.sweeps != list(SWEEPS):
        extra += ["--sweeps", *args.sweeps]
    if args.modes != list(MODES):
        extra += ["--modes", *args.modes]
    if args.out is not None:
        extra += ["--out", str(args.out)]
    if extra:
        command += " " + shlex.join(extra)
    result = {"command": command, "quick": args.quick, "workers": WORKERS, "populations": populations,
              "machine": machine_info(), "load_average_at_start": os.getloadavg(), "sweeps": {},
              "notes": list(args.note)}
    if "halfcheetah" in args.sweeps:
        result["halfcheetah_config_check"] = check_cleanrl_config(args.quick)
    if not sb3:
        result["notes"].append("stable-baselines3 is not installed: the Optuna + SB3 mode was not run")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.quick and "halfcheetah" in args.sweeps:  # the full run measures it with --breakdown, separately
        result["breakdown"] = run_breakdown(max(populations), 1, True, sb3)
        result["breakdown"]["command"] = "python -m bench.sweep_trials --quick"
    for name in args.sweeps:
        result["sweeps"][name] = run_sweep(name, populations, rounds, trials, seed_trials, args.quick, sb3,
                                           args.modes, args.iterations)
        result["total_wall_s"] = time.perf_counter() - started
        out.write_text(json.dumps(result, indent=2) + "\n")  # after each sweep: a partial run keeps its results
    result["load_average_at_end"] = os.getloadavg()
    result["total_wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['total_wall_s'] / 60:.1f} min)", flush=True)
    if not args.quick and args.out is None:
        write_section(markdown_section(result, _pilot(out)), SECTION_BEGIN, SECTION_END)
        print("updated BENCHMARKS.md (section 'Sweep throughput')", flush=True)
    else:
        print(markdown_section(result))
    return result


if __name__ == "__main__":
    main()
