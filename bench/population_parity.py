"""A population of one against the single agent of an earlier revision: parameters after N iterations,
and (with ``--timing``) the time of an iteration's phases.

    python -m bench.population_parity --ref f8d9340 --iterations 3
    python -m bench.population_parity --ref f8d9340 --timing halfcheetah_cleanrl --rounds 5

checks out ``--ref`` (the agent before it had a member dimension) into a temporary git worktree,
trains the same tiny agent there and here (pendulum: 16 envs, obs normalisation, clipping; and
HalfCheetah-v5: 2 envs, 16 steps) in separate processes, one thread each, and prints the
largest relative parameter difference per workload. Writes bench/results/population_parity.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside a checkout (argv: checkout, output file, workload, iterations).
TRAIN = r'''
import sys, torch
root, out, workload, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [root, root + "/tests"]
torch.set_num_threads(1)
from agent_factory import agent_config
from workbench.agents.ppo.agent import PPO
knobs = dict(normalize_obs=True, actor_clip_frac_threshold=0.6, gradient_clip_val=0.5)
torch.manual_seed(3)
if workload == "pendulum":
    from workbench.envs.pendulum import Pendulum
    agent = PPO(agent_config(num_mini_epochs=2, **knobs), Pendulum(16, seed=3), seed=3)
else:
    from workbench.envs.gym_adapter import GymVectorEnv
    agent = PPO(agent_config(num_out=6, batch_size=16, num_steps=16, **knobs),
                GymVectorEnv("HalfCheetah-v5", num_envs=2, seed=3), seed=3)
for _ in range(iterations):
    agent.train_iteration()
# a population of one keeps a leading member dimension of 1: the comparison reshapes it away
torch.save({k: v.clone() for k, v in agent.model.state_dict().items()}, out)
'''


# Times the phases of an iteration of a bench workload in a checkout (argv: checkout, workload);
# CPU seconds of this process: the machine is shared, and CPU time drifts less than wall time.
PHASES = r'''
import json, sys, time, torch
root, workload = sys.argv[1], sys.argv[2]
sys.path[:0] = [root]
torch.set_num_threads(1)
from bench.workloads import WORKLOADS
from bench.peers.ours import Trainer
trainer = Trainer(WORKLOADS[workload])
agent = trainer.agent
trainer.iterate(1)
clock = time.process_time
t0 = clock(); buf, _ = agent.collect_rollout(); t1 = clock(); agent.compute_targets(buf); agent.optimize(buf)
print(json.dumps({"rollout": t1 - t0, "update": clock() - t1}))
'''


def timing(ref_checkout: Path, workload: str, rounds: int) -> dict:
    """Interleaved rounds, earlier revision then this one; the minimum per phase of each."""
    best: dict[str, dict[str, float]] = {"ref": {}, "here": {}}
    for _ in range(rounds):
        for name, checkout in (("ref", ref_checkout), ("here", ROOT)):
            done = subprocess.run([sys.executable, "-c", PHASES, str(checkout), workload], check=True,
                                  capture_output=True, text=True, cwd=checkout)
            phases = json.loads(done.stdout.strip().splitlines()[-1])
            for phase, seconds in phases.items():
                best[name][phase] = min(seconds, best[name].get(phase, float("inf")))
    return {**best, "here/ref": {p: best["here"][p] / best["ref"][p] for p in best["ref"]}}


def train(checkout: Path, out: Path, workload: str, iterations: int) -> None:
    subprocess.run([sys.executable, "-c", TRAIN, str(checkout), str(out), workload, str(iterations)],
                   check=True, capture_output=True, cwd=checkout)


def worst_relative(a: dict, b: dict) -> tuple[float, bool]:
    import torch
    worst, identical = 0.0, True
    for key, old in a.items():
        new = b[key].reshape(old.shape).to(old.dtype)
        identical &= torch.equal(old, new)
        worst = max(worst, ((old.double() - new.double()).norm() / (old.double().norm() + 1e-30)).item())
    return worst, identical


def main() -> None:
    import torch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="f8d9340", help="the earlier revision (default: the last single-agent one)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--timing", metavar="WORKLOAD", help="time the phases of this bench workload instead")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.ref], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            if args.timing:
                results = timing(old, args.timing, args.rounds)
                print(json.dumps(results, indent=2))
                out = ROOT / "bench" / "results" / f"population_parity_timing_{args.timing}.json"
                out.write_text(json.dumps({"ref": args.ref, "workload": args.timing, "rounds": args.rounds,
                                           **results}, indent=2) + "\n")
                return
            for workload in ("pendulum", "halfcheetah"):
                train(old, Path(tmp) / f"old_{workload}.pt", workload, args.iterations)
                train(ROOT, Path(tmp) / f"new_{workload}.pt", workload, args.iterations)
                worst, identical = worst_relative(torch.load(Path(tmp) / f"old_{workload}.pt"),
                                                  torch.load(Path(tmp) / f"new_{workload}.pt"))
                results[workload] = {"worst_relative_param_difference": worst, "bit_identical": identical}
                print(f"{workload}: worst relative parameter difference {worst:.3g}"
                      f"{' (bit-identical)' if identical else ''} after {args.iterations} iterations")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    out = ROOT / "bench" / "results" / "population_parity.json"
    out.write_text(json.dumps({"ref": args.ref, "iterations": args.iterations, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
