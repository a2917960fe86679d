"""Population training throughput: P members as one batched agent, against P separate runs, SB3 and rsl_rl.

    python -m bench.population [--quick] [--workloads ...] [--sizes 1 2 4 8 16 32] [--rounds 3]

For each workload and population size P, one agent of P members (``workbench.train.build_population``
from the member configs ``workbench.train_population.member_configs`` makes of ``population.seeds=[...]``,
each member configured as ``bench.peers.ours``) trains in this process with one torch thread.
Its aggregate rate is P x num_envs x num_steps env steps per iteration over the iteration's wall time.

Compared, in the same run, round by round (the order rotates each round; every trainer is built once
and warmed up one iteration first):

- ``pair``: P separate single-agent runs (``bench.peers.ours``, what ``workbench train`` builds), two at
  a time on the two cores: this process and one worker process each train one single agent at the same
  time; the aggregate is the sum of the two processes' rates (2 x one process's rate, measured while two
  run). That rate does not depend on P: P runs take P/2 such pairs.
- ``single``: the same single agent alone (how much the pair slows each process).
- ``sb3`` / ``rsl_rl``: the peers (``bench.peers``), one single agent each, one process, one thread, where
  installed and where they run the workload (SB3 runs Gymnasium envs only: not the torch pendulum).

Ratios are taken within each round (population / peer), medians over rounds. Process CPU time is recorded
beside wall time (the machine is shared; CPU time is the steadier figure). The update (``agent.optimize``)
is timed in CPU time inside the measured iterations; its useful FLOPs are counted as in
``bench.compute_bound`` (forward + backward matmuls of actor and critic MLPs per minibatch, times the
minibatches, times P) and divided by the peak float32 matmul rate measured here (torch.mm, square, one
thread) and by torch.baddbmm's rate on the update's own stacked layer shapes.

Writes bench/results/population.json (``--quick``: population_quick.json, a smoke run on scaled-down
workloads) and replaces the "Population training" section of BENCHMARKS.md (not with ``--quick``).
``python -m bench.report`` regenerates BENCHMARKS.md without that section: ``--report`` puts it back
from the JSON without measuring anything.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION_BEGIN = "<!-- bench.population: begin (written by python -m bench.population) -->"
SECTION_END = "<!-- bench.population: end -->"

SIZES = (1, 2, 4, 8, 16, 32)
WORKLOADS = ("halfcheetah_cleanrl", "halfcheetah_8env", "pendulum_1024")
PEERS = ("sb3", "rsl_rl")
# iterations per measurement (each trainer's rate per round is over this many iterations)
ITERATIONS = {"halfcheetah_cleanrl": 1, "halfcheetah_8env": 1, "pendulum_1024": 1}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)


def workload_for(name: str, quick: bool):
    from bench.workloads import WORKLOADS as ALL, scaled
    w = ALL[name]
    if not quick:
        return w
    # smoke test: same settings, smaller iterations (minibatch counts still divide)
    return {"halfcheetah_cleanrl": lambda: scaled(w, num_steps=256),
            "halfcheetah_8env": lambda: scaled(w, num_steps=32),
            "pendulum_1024": lambda: scaled(w, num_envs=64)}[name]()


# ---------------------------------------------------------------------------------------- trainers
class Timed:
    """Wraps an agent method: wall and CPU seconds of each call."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu = fn, [], []

    def __call__(self, *args, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = self.fn(*args, **kwargs)
        self.wall.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu_start)
        return out


class PopulationTrainer:
    """One agent of ``size`` members (seeds seed .. seed+size-1), configured as ``bench.peers.ours``."""

    def __init__(self, workload, size: int, seed: int = 0):
        from omegaconf import OmegaConf

        from bench.compose import compose_config
        from bench.peers.ours import layers_for, overrides_for
        from workbench.train import build_population
        from workbench.train_population import member_configs

        seeds = ",".join(str(seed + i) for i in range(size))
        cfg = compose_config(overrides_for(workload, seed) + [f"population.seeds=[{seeds}]"])
        for container in (cfg.agent.model.actor.mu_model, cfg.agent.model.critic):
            model = container.models[0]
            model.layers = OmegaConf.create(layers_for(workload))
            model.normalize_obs = workload.normalize_obs
        members = member_configs(cfg)
        self.agent = agent = build_population(members, [None] * size)
        assert agent.num_members == size, (agent.num_members, size)
        self.eval_env = agent.evaluator.env if agent.evaluator is not None else None
        agent.evaluator = None  # the benchmark times training, as the peers' loops do
        self.steps_per_iteration = agent.num_members * agent.num_envs * agent.num_steps
        self.collect = agent.collect_rollout = Timed(agent.collect_rollout)
        self.update = agent.optimize = Timed(agent.optimize)
        self.steps = 0

    def iterate(self, n: int) -> None:
        for _ in range(n):
            out = self.agent.train_iteration()
            assert len(out) == self.agent.num_members and all(m is not None for m in out)
            self.steps += self.steps_per_iteration

    def dims(self) -> tuple[int, int]:
        return int(self.agent.env.get_obs()["obs"].shape[-1]), int(self.agent.env.action_dim)

    def close(self) -> None:
        for env in (self.agent.env, self.eval_env):
            if env is not None and hasattr(env, "close"):
                env.close()


def make(name: str, workload, seed: int = 0):
    from bench.peers import make_trainer
    if name.startswith("pop"):
        return PopulationTrainer(workload, int(name[3:]), seed=seed)
    return make_trainer("ours" if name == "single" else name, workload, seed=seed)


def timed_iterations(trainer, n: int) -> tuple[float, float]:
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.iterate(n)
    return time.perf_counter() - start, time.process_time() - cpu_start


# ---------------------------------------------------------------------------------------- the pair
def worker(workload_name: str, quick: bool, seed: int) -> None:
    """The second process of the pair: one single agent; on 'N' trains N iterations, answers timings."""
    _quiet()
    with contextlib.redirect_stdout(sys.stderr):
        trainer = make("single", workload_for(workload_name, quick), seed=seed)
        trainer.iterate(1)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        n = int(line)
        with contextlib.redirect_stdout(sys.stderr):
            wall, cpu = timed_iterations(trainer, n)
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "steps": n * trainer.steps_per_iteration}), flush=True)
    trainer.close()


class Pair:
    """This process's single agent plus a worker process's, trained at the same time."""

    def __init__(self, workload_name: str, quick: bool, workload, seed: int):
        cmd = [sys.executable, "-m", "bench.population", "--worker", workload_name, "--seed", str(seed + 1)]
        if quick:
            cmd.append("--quick")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.local = make("single", workload, seed=seed)
        self.local.iterate(1)  # warm-up
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the pair's worker process did not start")
        self.steps_per_iteration = self.local.steps_per_iteration

    def run(self, n: int) -> dict:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        wall, cpu = timed_iterations(self.local, n)
        other = json.loads(self.proc.stdout.readline())
        steps = n * self.steps_per_iteration
        rates = [steps / wall, other["steps"] / other["wall_s"]]
        cpu_rates = [steps / cpu, other["steps"] / other["cpu_s"]]
        return {"sps": sum(rates), "per_process_sps": rates, "per_process_cpu_sps": cpu_rates}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=60)
        if self.proc.poll() is None:
            self.proc.kill()
        self.local.close()


# ---------------------------------------------------------------------------------------- matmul rates
def bmm_gflops(p: int, m: int, k: int, n: int, min_seconds: float = 0.2, repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP/s (CPU time) of out = bias + A @ B with A [p, m, k], B [p, k, n]: the
    stacked layers' forward (torch.baddbmm), as ``bench.compute_bound.matmul_gflops`` times torch.mm."""
    from bench.compute_bound import best_seconds
    a, b, bias = torch.randn(p, m, k), torch.randn(p, k, n), torch.randn(p, 1, n)
    out = torch.empty(p, m, n)
    seconds = best_seconds(lambda: torch.baddbmm(bias, a, b, out=out), min_seconds, repeats)
    return 2.0 * p * m * k * n / seconds / 1e9


def update_bound(workload, trainer: PopulationTrainer, peak_gflops: float, shape_rates: bool) -> dict:
    from bench.compute_bound import layer_dims, update_flops
    size = trainer.agent.num_members
    obs_dim, action_dim = trainer.dims()
    update_cpu = statistics.median(trainer.update.cpu[1:] or trainer.update.cpu)  # [0]: the warm-up
    collect_cpu = statistics.median(trainer.collect.cpu[1:] or trainer.collect.cpu)
    flops = size * update_flops(workload, obs_dim, action_dim)
    achieved = flops / update_cpu / 1e9
    out = {"update_cpu_s": update_cpu, "collect_cpu_s": collect_cpu,
           "update_share_of_iteration_cpu": update_cpu / (update_cpu + collect_cpu),
           "update_gflop": flops / 1e9, "update_gflops_achieved": achieved,
           "fraction_of_peak": achieved / peak_gflops}
    if shape_rates:
        layers = layer_dims(obs_dim, action_dim, workload.hidden)
        rates = {f"{size}x{workload.minibatch_size}x{i}x{o}": bmm_gflops(size, workload.minibatch_size, i, o)
                 for i, o in layers}
        out["same_shape_baddbmm_gflops"] = rates
        out["fraction_of_same_shape_baddbmm"] = achieved / statistics.mean(rates.values())
    return out


# ---------------------------------------------------------------------------------------- one workload
def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def run_workload(name: str, sizes: list[int], peers: list[str], rounds: int, quick: bool, seed: int,
                 peak_gflops: float, shape_rates: bool, log=print) -> dict:
    from bench.peers import available
    workload = workload_for(name, quick)
    iterations = ITERATIONS[name]
    wanted = [p for p in peers if p in workload.peers]
    not_run = {p: "does not run this workload" for p in peers if p not in workload.peers}
    not_run.update({p: "not installed" for p in wanted if not available(p)})
    names = [f"pop{p}" for p in sizes] + [p for p in wanted if available(p)] + ["single"]
    trainers, setup_s = {}, {}
    for n in names:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            trainers[n] = make(n, workload, seed=seed)
            trainers[n].iterate(1)  # warm-up
        setup_s[n] = time.perf_counter() - start
    start = time.perf_counter()
    trainers["pair"] = Pair(name, quick, workload, seed)
    setup_s["pair"] = time.perf_counter() - start
    names.append("pair")
    log(f"[{name}] built and warmed up: " + ", ".join(f"{n} {s:.1f}s" for n, s in setup_s.items()))

    sps = {n: [] for n in names}
    cpu_sps = {n: [] for n in names if n != "pair"}
    pair_detail = []
    for r in range(rounds):
        for n in rotate(names, r):
            if n == "pair":
                with contextlib.redirect_stdout(sys.stderr):
                    res = trainers[n].run(iterations)
                sps[n].append(res["sps"])
                pair_detail.append(res)
                continue
            with contextlib.redirect_stdout(sys.stderr):
                wall, cpu = timed_iterations(trainers[n], iterations)
            steps = iterations * trainers[n].steps_per_iteration
            sps[n].append(steps / wall)
            cpu_sps[n].append(steps / cpu)
        log(f"[{name}] round {r + 1}/{rounds}: " + "  ".join(f"{n} {sps[n][-1]:,.0f}" for n in names) + " steps/s")

    med = statistics.median
    result = {"workload": workload.name, "description": workload.description,
              "settings": {"num_envs_per_member": workload.num_envs, "num_steps": workload.num_steps,
                           "epochs": workload.epochs, "minibatches": workload.minibatches,
                           "minibatch_size_per_member": workload.minibatch_size, "hidden": list(workload.hidden),
                           "activation": workload.activation},
              "rounds": rounds, "iterations_per_measurement": iterations, "warmup_iterations": 1,
              "sizes": sizes, "peers_not_run": not_run, "setup_and_warmup_s": setup_s, "comparators": {},
              "population": {}}
    pair_cpu = [statistics.mean(d["per_process_cpu_sps"]) for d in pair_detail]
    for n in names:
        if n.startswith("pop"):
            continue
        entry = {"sps_per_round": sps[n], "sps_median": med(sps[n])}
        if n == "pair":
            entry.update({"per_process_sps_per_round": [d["per_process_sps"] for d in pair_detail],
                          "per_process_cpu_sps_median": med(pair_cpu),
                          "note": "aggregate of 2 single-agent processes trained at the same time"})
        else:
            entry.update({"cpu_sps_per_round": cpu_sps[n], "cpu_sps_median": med(cpu_sps[n])})
        result["comparators"][n] = entry
    for p in sizes:
        n = f"pop{p}"
        t = trainers[n]
        entry = {"sps_per_round": sps[n], "sps_median": med(sps[n]), "sps_min": min(sps[n]), "sps_max": max(sps[n]),
                 "sps_per_member_median": med(sps[n]) / p, "cpu_sps_per_round": cpu_sps[n],
                 "cpu_sps_median": med(cpu_sps[n]), "steps_per_iteration": t.steps_per_iteration,
                 "iteration_wall_s_median": t.steps_per_iteration / med(sps[n]) * 1.0}
        for c in names:
            if c.startswith("pop"):
                continue
            ratios = [a / b for a, b in zip(sps[n], sps[c])]
            entry[f"ratio_over_{c}_per_round"] = ratios
            entry[f"ratio_over_{c}_median"] = med(ratios)
        # CPU time: the population's steps per CPU-second over two single processes' (each's own CPU
        # rate): what the ratio to the pair would be on two otherwise idle cores
        entry["cpu_ratio_over_pair_median"] = med([a / (2 * b) for a, b in zip(cpu_sps[n], pair_cpu)])
        entry["update"] = update_bound(workload, t, peak_gflops, shape_rates and name == "halfcheetah_cleanrl")
        result["population"][str(p)] = entry
    with contextlib.redirect_stdout(sys.stderr):
        for t in trainers.values():
            t.close()
    derive(result)
    return result


def derive(result: dict) -> None:
    """Per-round CPU-time ratios of each population over the one-process comparators (SB3, rsl_rl,
    the single agent alone): the ratios with the time other jobs took from each side taken out."""
    for entry in result["population"].values():
        for c, comp in result["comparators"].items():
            if "cpu_sps_per_round" in comp:
                ratios = [a / b for a, b in zip(entry["cpu_sps_per_round"], comp["cpu_sps_per_round"])]
                entry[f"cpu_ratio_over_{c}_per_round"] = ratios
                entry[f"cpu_ratio_over_{c}_median"] = statistics.median(ratios)


# ---------------------------------------------------------------------------------------- report
def fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def markdown_section(result: dict) -> str:
    lines = [SECTION_BEGIN, "## Population training", "",
             "One agent of P members (`workbench.train.build_population`, members from `population.seeds=[...]`) "
             "trains in one process with one torch thread; its aggregate rate is P x envs per member x steps "
             "over the iteration's wall time (collection plus updates). Compared in the same run, in rotating "
             "order, round by round, ratios taken within each round, medians over rounds: "
             "**2 single processes** = P separate `workbench train` runs two at a time on the machine's "
             "two cores (two processes trained at the same time, aggregate = sum of their rates, the same "
             "for any P); SB3 and rsl_rl = one single agent each (one process, one thread). The population "
             "uses one core where the pair uses two: per core, its advantage over separate runs is twice the "
             "pair ratio. The CPU column divides the population's steps per CPU-second by twice one single "
             "process's: the pair ratio on two otherwise idle cores. In brackets after the SB3 and rsl_rl "
             "ratios: the same ratio in steps per CPU-second. Update = `agent.optimize` in CPU time; "
             "its share of the float32 matmul peak counts actor + critic forward/backward matmul FLOPs as in "
             "`bench/compute_bound.py`.", "",
             f"Machine: {result['machine']['cpu_model']}, nproc {result['machine']['nproc']}, shared with other "
             "developers' jobs while this ran (wall times drift; ratios within a round are the measure). "
             + (f"1-minute load average {result['load_average_at_start'][0]:.1f} at the start, "
                f"{result['load_average_at_end'][0]:.1f} at the end. " if "load_average_at_end" in result else "")
             + f"Peak float32 matmul (torch.mm, square, 1 thread, CPU time): {result['peak_gflops']:.0f} GFLOP/s.",
             "", f"Reproduce: `{result['command']}` ({result['total_wall_s'] / 60:.1f} min).", ""]
    for name, w in result["workloads"].items():
        comps = w["comparators"]
        lines += [f"### {name}", "", w["description"] + "."
                  + (f" Measured by an earlier run: `{w['measured_by']}`." if "measured_by" in w else ""), "",
                  f"{w['rounds']} rounds x {w['iterations_per_measurement']} iteration(s) per measurement, after "
                  "1 warm-up iteration. Comparators (median steps/s, wall): "
                  + ", ".join(f"{c} {fmt(v['sps_median'])}" for c, v in comps.items())
                  + (" (pair: per process " + fmt(statistics.median(sum(comps["pair"]["per_process_sps_per_round"], [])))
                     + ")" if "pair" in comps else "") + "."
                  + "".join(f" {p}: not run ({why})." for p, why in w["peers_not_run"].items()), ""]
        head = ["P", "population steps/s", "per member", "/ SB3 (CPU)", "/ rsl_rl (CPU)", "/ 2 single processes",
                "/ 2 single (CPU)", "update share (CPU)", "update % of matmul peak"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for p, e in w["population"].items():
            u = e["update"]
            cells = [p, fmt(e["sps_median"]), fmt(e["sps_per_member_median"]),
                     _pair(e, "sb3"), _pair(e, "rsl_rl"),
                     fmt(e.get("ratio_over_pair_median"), 2), fmt(e["cpu_ratio_over_pair_median"], 2),
                     f"{100 * u['update_share_of_iteration_cpu']:.0f}%",
                     f"{100 * u['fraction_of_peak']:.1f}%"
                     + (f" ({100 * u['fraction_of_same_shape_baddbmm']:.0f}% of same-shape baddbmm)"
                        if "fraction_of_same_shape_baddbmm" in u else "")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def keep_earlier(result: dict, earlier: dict, measured: list[str]) -> None:
    """``--merge``: the earlier run's workloads this run does not measure stay in ``result``, each
    marked with the command that measured it; the earlier notes stay too."""
    for name, workload in earlier["workloads"].items():
        if name not in measured:
            result["workloads"][name] = {**workload, "measured_by": workload.get("measured_by", earlier["command"])}
    result["notes"] = list(dict.fromkeys(earlier.get("notes", []) + result["notes"]))


def in_table_order(workloads: dict) -> dict:
    """The workloads in WORKLOADS' order (unknown names last), whichever run measured each."""
    rank = {name: i for i, name in enumerate(WORKLOADS)}
    return {name: workloads[name] for name in sorted(workloads, key=lambda n: rank.get(n, len(rank)))}


def _pair(entry: dict, peer: str) -> str:
    if f"ratio_over_{peer}_median" not in entry:
        return "-"
    return f"{entry[f'ratio_over_{peer}_median']:.2f} ({entry[f'cpu_ratio_over_{peer}_median']:.2f})"


def write_section(text: str, begin: str = SECTION_BEGIN, end: str = SECTION_END) -> None:
    """Replace BENCHMARKS.md's section between the markers ``begin`` and ``end`` with ``text``
    (appended when the file has no such section)."""
    old = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    BENCHMARKS.write_text(new)


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.population", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: scaled-down workloads, P in {1, 2}, 1 round")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--max-size", nargs="*", default=[], metavar="WORKLOAD=P",
                        help="cap P for a workload, e.g. pendulum_1024=16")
    parser.add_argument("--peers", nargs="*", default=list(PEERS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", action="append", default=[], help="a note kept in the JSON and the section")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other workloads of bench/results/population.json (replace only those measured)")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild BENCHMARKS.md's section from bench/results/population.json "
                             "(python -m bench.report rewrites BENCHMARKS.md without it)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker(args.worker, args.quick, args.seed)
    if args.report:
        path = RESULTS / "population.json"
        result = json.loads(path.read_text())
        for w in result["workloads"].values():
            derive(w)
        result["notes"] = list(dict.fromkeys(result.get("notes", []) + args.note))
        path.write_text(json.dumps(result, indent=2) + "\n")
        write_section(markdown_section(result))
        print(f"updated {BENCHMARKS} from {path}")
        return None

    _quiet()
    from bench.compute_bound import matmul_gflops
    from bench.machine import machine_info
    started = time.perf_counter()
    sizes = args.sizes or ([1, 2] if args.quick else list(SIZES))
    rounds = args.rounds or (1 if args.quick else 3)
    caps = {k: int(v) for k, v in (item.split("=", 1) for item in args.max_size)}
    square = {n: matmul_gflops(n, n, n) for n in ((256,) if args.quick else (256, 512, 1024))}
    peak = max(square.values())
    print(f"peak float32 matmul (1 thread): {peak:.0f} GFLOP/s", flush=True)
    command = "python -m bench.population" + (" --quick" if args.quick else "")
    extra = []
    if args.workloads != list(WORKLOADS):
        extra += ["--workloads", *args.workloads]
    if args.sizes:
        extra += ["--sizes", *map(str, args.sizes)]
    if args.max_size:
        extra += ["--max-size", *args.max_size]
    if args.peers != list(PEERS):
        extra += ["--peers", *args.peers]
    if args.rounds:
        extra += ["--rounds", str(args.rounds)]
    if args.merge:
        extra += ["--merge"]
    if extra:
        command += " " + shlex.join(extra)
    result = {"command": command, "quick": args.quick, "threads": 1, "square_matmul_gflops": square,
              "peak_gflops": peak, "machine": machine_info(), "load_average_at_start": os.getloadavg(),
              "workloads": {}, "notes": list(args.note)}
    out = RESULTS / ("population_quick.json" if args.quick else "population.json")
    if args.merge and out.exists():
        keep_earlier(result, json.loads(out.read_text()), args.workloads)
    for name in args.workloads:
        wsizes = [p for p in sizes if p <= caps.get(name, max(sizes))]
        if len(wsizes) < len(sizes):
            result["notes"].append(f"{name}: P capped at {max(wsizes)} (--max-size)")
        result["workloads"][name] = run_workload(name, wsizes, args.peers, rounds, args.quick, args.seed, peak,
                                                 shape_rates=True)
        result["total_wall_s"] = time.perf_counter() - started
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")  # after each workload: a partial run keeps its results
    result["load_average_at_end"] = os.getloadavg()
    result["total_wall_s"] = time.perf_counter() - started
    result["workloads"] = in_table_order(result["workloads"])
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['total_wall_s'] / 60:.1f} min)", flush=True)
    if not args.quick:
        write_section(markdown_section(result))
        print(f"updated {BENCHMARKS} (section 'Population training')", flush=True)
    else:
        print(markdown_section(result))


if __name__ == "__main__":
    main()
