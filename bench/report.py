"""Build BENCHMARKS.md (and the PNG curves) from the JSON results in bench/results/.

    python -m bench.report [--out BENCHMARKS.md]

Every figure in the generated file comes from a results file, which records the command that
produced it; the hand-written analysis lives in bench/analysis.md and is included verbatim.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
ORDER = ["halfcheetah_cleanrl", "halfcheetah_relu3x256", "pendulum_1024", "halfcheetah_8env"]


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def machine_section(results: list[dict]) -> list[str]:
    machine = next((r["machine"] for r in results if r and "machine" in r), None)
    if machine is None:
        return []
    v = machine["versions"]
    return ["## Machine", "",
            f"- CPU: {machine['cpu_model']}, `nproc` = {machine['nproc']} (shared with other developers' jobs "
            "while these figures were taken: absolute figures are noisy, ratios from the same run are the measure)",
            f"- platform: {machine['platform']}",
            "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), ""]


def throughput_section(runs: list[dict]) -> list[str]:
    lines = ["## Throughput: end-to-end environment steps per second", "",
             "Each implementation is built once, warmed up one iteration, then trained round by round in "
             "rotating order (A B C D, B C D A, ...); steps/s counts collection plus updates. The ratio is "
             "ours/peer taken within each round, median over rounds. Target (issue 6): ours >= 1.5x the "
             "fastest peer. Process CPU time is recorded beside wall time: every implementation runs with one "
             "torch thread, so steps per CPU-second is the same work measured without the time other jobs "
             "on the machine took from us.", ""]
    for run in runs:
        s = run["settings"]
        lines += [f"### {run['workload']}", "", run["description"] + ".", "",
                  f"Settings: {s['num_envs']} env(s) x {s['num_steps']} steps, {s['epochs']} epochs x "
                  f"{s['minibatches']} minibatches of {s['minibatch_size']}, {'x'.join(map(str, s['hidden']))} "
                  f"{s['activation']}, lr {s['lr']}, gamma {s['gamma']}, lambda {s['lambda']}, clip {s['clip']}, "
                  f"grad clip {s['grad_clip']}, {'learnable' if s['learnable_std'] else 'fixed'} std "
                  f"(logstd {s['init_logstd']}), observation normalisation {'on' if s['normalize_obs'] else 'off'}.",
                  "", "| implementation | median steps/s (wall) | min - max | ours / this (wall) | "
                  "steps per CPU-second | ours / this (CPU) |", "|---|---:|---:|---:|---:|---:|"]
        for name, imp in run["implementations"].items():
            ratio = imp.get("ratio_ours_over_peer_median")
            cpu_ratio = imp.get("cpu_ratio_ours_over_peer_median")
            lines.append(f"| {name} | {fmt(imp['sps_median'])} | {fmt(imp['sps_min'])} - {fmt(imp['sps_max'])} | "
                         f"{'1.00' if name == 'ours' else fmt(ratio, 2)} | {fmt(imp.get('cpu_sps_median'))} | "
                         f"{'1.00' if name == 'ours' else fmt(cpu_ratio, 2)} |")
        fastest = run.get("fastest_peer")
        if fastest:
            ratio = run["ratio_vs_fastest_peer"]
            verdict = "meets" if ratio >= 1.5 else "misses"
            lines += ["", f"Ours / fastest peer ({fastest}): **{ratio:.2f}x**, {verdict} the 1.5x target."]
            if "cpu_ratio_vs_fastest_peer" in run:
                lines.append(f"Per CPU-second (steadier on a shared machine), ours / fastest peer "
                             f"({run['cpu_fastest_peer']}): **{run['cpu_ratio_vs_fastest_peer']:.2f}x**.")
        if run.get("skipped"):
            lines.append(f"Not installed, skipped: {', '.join(run['skipped'])}.")
        lines += ["", f"{run['rounds']} rounds x {run['iterations_per_round']} iteration(s) "
                  f"({run['steps_per_round']:,} steps) per implementation per round. Reproduce: `{run['command']}`", ""]
    return lines


def breakdown_section(breakdowns: list[dict], bound: dict | None) -> list[str]:
    lines = []
    if breakdowns:
        lines += ["## Where our iteration's time goes", "",
                  "Phase timers (process CPU time) around the agent's own methods (`python -m bench.breakdown`); "
                  "shares of the iteration's CPU time. Nested rows are part of the row above them; `critic.forward` counts "
                  "the critic in collection (next-state values) and in the update.", ""]
        for b in breakdowns:
            lines += [f"### {b['workload']}: {fmt(b['seconds_per_iteration'], 2)} s per iteration "
                      f"({fmt(b['steps_per_second'])} steps per CPU-second in this run)", "", "| phase | s / iteration | share |",
                      "|---|---:|---:|"]
            for phase, sec in b["phase_seconds_per_iteration"].items():
                lines.append(f"| {phase} | {sec:.3f} | {100 * b['phase_share'][phase]:.0f}% |")
            lines += ["", f"Reproduce: `{b['command']}`", ""]
    if bound:
        lines += ["## The compute bound", "",
                  f"float32 matmul on this machine, {bound['threads']} thread(s), GFLOP per CPU-second: "
                  + ", ".join(f"{n}x{n}: {g:.1f} GFLOP/s" for n, g in bound["square_matmul_gflops"].items())
                  + f"; peak taken as {bound['peak_gflops']:.1f} GFLOP/s.", "",
                  "Update phase = our `optimize()` for one iteration (all epochs x minibatches). Useful FLOPs = "
                  "forward + backward matmuls of actor and critic MLPs per minibatch (forward 2*B*in*out per layer, "
                  "weight gradient the same, input gradient for every layer but the first).", "",
                  "| workload | minibatch | minibatches | update GFLOP | update s | achieved GFLOP/s | of peak | "
                  "same-shape matmul GFLOP/s | of same-shape | update share of iteration |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for name, w in bound["workloads"].items():
            shapes = ", ".join(f"{k}: {v:.1f}" for k, v in w["same_shape_matmul_gflops"].items())
            lines.append(f"| {name} | {w['minibatch_size']} | {w['minibatches_per_update']} | "
                         f"{w['update_gflop']:.2f} | {w['update_s']:.2f} | {w['update_gflops_achieved']:.2f} | "
                         f"{100 * w['fraction_of_peak']:.1f}% | {shapes} | "
                         f"{100 * w['fraction_of_same_shape_matmul']:.1f}% | {100 * w['update_share_of_iteration']:.0f}% |")
        lines += ["", f"Reproduce: `{bound['command']}`", ""]
    return lines


def smooth(values: list[float], window: int = 10) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1):i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def learning_section(runs: list[dict]) -> list[str]:
    if not runs:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    published = runs[0]["cleanrl_published"]
    lines = ["## Learning check: HalfCheetah-v5, 1M steps, CleanRL-like settings", "",
             "Score = mean raw return of the last 100 training episodes (CleanRL's protocol). CleanRL's "
             f"published figure: {published['mean']} +- {published['std']} ({published['source']}).", ""]
    by_variant: dict[str, list[dict]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r)
    for variant, seeds in sorted(by_variant.items()):
        seeds.sort(key=lambda r: r["seed"])
        lines += [f"### variant `{variant}`", "", "Overrides: `" + " ".join(seeds[0]["overrides"][:-2]) + "`", "",
                  "| seed | frames | episodes | score (last 100) | wall s | finished |", "|---:|---:|---:|---:|---:|---|"]
        for r in seeds:
            lines.append(f"| {r['seed']} | {r['frames']:,} | {r['episodes']} | {fmt(r['score_last100'], 1)} | "
                         f"{fmt(r['wall_s'])} | {'yes' if r['done'] else 'no (partial)'} |")
        done = [r["score_last100"] for r in seeds if r["done"] and r["score_last100"] is not None]
        if done:
            mean = statistics.mean(done)
            std = statistics.stdev(done) if len(done) > 1 else 0.0
            verdict = "at or above" if mean >= published["mean"] else "below"
            lines += ["", f"Mean over {len(done)} finished seeds: **{mean:.1f} +- {std:.1f}**, {verdict} "
                      f"CleanRL's {published['mean']}."]
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in seeds:
            ax.plot(r["episode_frames"], smooth(r["episode_returns"]), label=f"seed {r['seed']}")
        ax.axhline(published["mean"], color="k", ls="--", lw=1, label="CleanRL published (1M)")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return (10-episode mean)")
        ax.set_title(f"HalfCheetah-v5, ours, variant {variant}")
        ax.legend()
        png = RESULTS / f"learning_halfcheetah_{variant}.png"
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        lines += ["", f"![learning curve]({png.relative_to(ROOT)})", "",
                  "Reproduce (one seed): `" + seeds[0]["command"] + "`", ""]
    return lines


def pendulum_section(p: dict | None) -> list[str]:
    if not p:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    o, r = p["ours"], p["rsl_rl"]
    fig, ax = plt.subplots(figsize=(7, 4))
    oc = [c for c in o["curve"] if c["train_return"] is not None]
    ax.plot([c["wall_s"] for c in oc], [c["train_return"] for c in oc], label="ours, training")
    evals = [c for c in o["curve"] if "eval_return" in c]
    ax.plot([c["wall_s"] for c in evals], [c["eval_return"] for c in evals], "o-", label="ours, deterministic eval")
    rc = [c for c in r["curve"] if c["train_return"] is not None]
    ax.plot([c["wall_s"] for c in rc], [c["train_return"] for c in rc], label="rsl_rl, training")
    ax.axhline(-300, color="gray", ls=":", lw=1)
    ax.axhline(-250, color="gray", ls="--", lw=1)
    ax.set_xlabel("training wall time (s, each implementation's own)")
    ax.set_ylabel("episode return")
    ax.set_title("Default pendulum run (1024 envs), ours vs rsl_rl, interleaved")
    ax.legend()
    png = RESULTS / "pendulum_default.png"
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    lines = ["## Default pendulum run (issue 2's figures)", "",
             "`workbench train` defaults (env=pendulum, conf/tuning/pendulum.yaml, evaluator on) and rsl_rl's PPO "
             "(its default algorithm settings, 2x64 ELU, 32 steps x 5 epochs x 4 minibatches) on the same torch "
             "pendulum, alternating iteration by iteration in one process.", "",
             "| | ours | rsl_rl |", "|---|---:|---:|",
             f"| steps | {p['steps']:,} | {p['steps']:,} |",
             f"| training wall s | {o['wall_s']:.1f} | {r['wall_s']:.1f} |",
             f"| training CPU s | {fmt(o.get('cpu_s'), 1)} | {fmt(r.get('cpu_s'), 1)} |",
             f"| steps/s | {o['sps']:,.0f} | {r['sps']:,.0f} |",
             f"| wall s to training return >= -300 | {fmt(o['wall_s_to_train_return_ge_-300'], 1)} | - |",
             f"| wall s to eval return >= -250 | {fmt(o['wall_s_to_eval_return_ge_-250'], 1)} | - |",
             f"| CPU s to training return >= -300 | {fmt(o.get('cpu_s_to_train_return_ge_-300'), 1)} | - |",
             f"| CPU s to eval return >= -250 | {fmt(o.get('cpu_s_to_eval_return_ge_-250'), 1)} | - |",
             f"| final training return | {fmt(o['final_train_return'], 1)} | {fmt(r['final_train_return'], 1)} |",
             f"| final deterministic return | {o['final_eval_return']:.1f} | {r['final_deterministic_return']:.1f} |",
             "", f"![pendulum curve]({png.relative_to(ROOT)})", "", f"Reproduce: `{p['command']}`", ""]
    return lines


def build() -> str:
    throughput = [t for t in (load(RESULTS / f"throughput_{n}.json") for n in ORDER) if t]
    breakdowns = [b for b in (load(RESULTS / f"breakdown_{n}.json") for n in ORDER) if b]
    bound = load(RESULTS / "compute_bound.json")
    learning = [json.loads(p.read_text()) for p in sorted((RESULTS / "learning").glob("*.json"))]
    pendulum = load(RESULTS / "pendulum_default.json")
    lines = ["# Benchmarks", "",
             "Generated by `python -m bench.report` from the JSON files in `bench/results/`; do not edit by hand "
             "(the analysis comes from `bench/analysis.md`). Peers are installed with "
             "`pip install -c constraints.txt -e .[bench]`.", ""]
    lines += machine_section([*throughput, bound, pendulum, *learning])
    lines += throughput_section(throughput)
    lines += pendulum_section(pendulum)
    lines += learning_section(learning)
    lines += breakdown_section(breakdowns, bound)
    analysis = HERE / "analysis.md"
    if analysis.exists():
        lines += [analysis.read_text().rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    args.out.write_text(build())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
