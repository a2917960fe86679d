"""Issue 2's figures: the default pendulum run (``workbench train`` defaults) and rsl_rl beside it.

    python -m bench.pendulum_default [--steps 2000000]

Builds our agent from the default config (env=pendulum with conf/tuning/pendulum.yaml; evaluator on,
as ``workbench train`` runs it) and rsl_rl's PPO (OnPolicyRunner, its default algorithm settings,
2x64 networks, 32 steps x 5 epochs x 4 minibatches) on the same 1024-env torch pendulum. The two
alternate iteration by iteration (A B A B) and each one's training wall time is summed separately.
Records per iteration: frames, wall time, training return (mean of episodes finished), and ours'
deterministic evaluation return; reports when ours first reaches training >= -300 and eval >= -250,
and rsl_rl's deterministic return (64 envs, 200 steps) at the end. Writes bench/results/pendulum_default.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

from bench.compose import build_ours
from bench.episodes import EpisodeRecorder
from bench.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_MARK, EVAL_MARK = -300.0, -250.0


def rsl_runner(seed: int, num_envs: int = 1024):
    from rsl_rl.runners import OnPolicyRunner

    from bench.rsl_vec_env import RslVecEnv
    from workbench.envs.pendulum import Pendulum
    env = RslVecEnv(Pendulum(num_envs=num_envs, seed=seed))
    model = {"class_name": "rsl_rl.models:MLPModel", "hidden_dims": [64, 64], "activation": "elu",
             "obs_normalization": True}
    cfg = {"seed": seed, "num_steps_per_env": 32, "save_interval": 10**9,
           "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
           "actor": {**model, "distribution_cfg": {"class_name": "rsl_rl.modules.distribution:GaussianDistribution",
                                                   "init_std": 1.0}},
           "critic": dict(model),
           "algorithm": {"class_name": "rsl_rl.algorithms:PPO", "num_learning_epochs": 5, "num_mini_batches": 4}}
    with contextlib.redirect_stdout(io.StringIO()):
        runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
    return runner, env


@torch.no_grad()
def rsl_deterministic_return(runner, seed: int, num_envs: int = 64, steps: int = 200) -> float:
    from workbench.envs.pendulum import Pendulum
    env = Pendulum(num_envs=num_envs, seed=seed)
    policy = runner.get_inference_policy()
    obs = env.reset()["obs"]
    total = torch.zeros(num_envs)
    from tensordict import TensorDict
    for _ in range(steps):
        action = policy(TensorDict({"policy": obs}, batch_size=[num_envs]))
        result = env.step(action)
        total += result.reward
        obs = result.obs["obs"]
    runner.alg.train_mode()
    return float(total.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    agent = build_ours([f"seed={args.seed}", f"agent.training_max_steps={args.steps}"], with_evaluator=True)
    ours_rec = EpisodeRecorder(agent.env)
    runner, rsl_env = rsl_runner(args.seed)
    rsl_rec = EpisodeRecorder(rsl_env.env)
    per_iter = 1024 * 32
    ours_curve, rsl_curve = [], []
    ours_wall = rsl_wall = ours_cpu = rsl_cpu = 0.0
    ours_marks: dict[str, float | None] = {"train": None, "eval": None, "train_cpu": None, "eval_cpu": None}
    while agent.step_count < args.steps:
        start, cpu = time.perf_counter(), time.process_time()
        logs = agent.train_iteration()
        ours_wall += time.perf_counter() - start
        ours_cpu += time.process_time() - cpu
        point = {"frames": agent.step_count, "wall_s": ours_wall, "cpu_s": ours_cpu,
                 "train_return": logs["info/episode_reward"] if ours_rec.returns else None}
        if "eval/episode_reward" in logs:
            point["eval_return"] = logs["eval/episode_reward"]
            if ours_marks["eval"] is None and point["eval_return"] >= EVAL_MARK:
                ours_marks["eval"], ours_marks["eval_cpu"] = ours_wall, ours_cpu
        if ours_marks["train"] is None and ours_rec.returns and point["train_return"] >= TRAIN_MARK:
            ours_marks["train"], ours_marks["train_cpu"] = ours_wall, ours_cpu
        ours_curve.append(point)

        start, cpu = time.perf_counter(), time.process_time()
        runner.learn(num_learning_iterations=1)
        rsl_wall += time.perf_counter() - start
        rsl_cpu += time.process_time() - cpu
        recent = rsl_rec.returns[-1024:]
        rsl_curve.append({"frames": len(rsl_curve) * per_iter + per_iter, "wall_s": rsl_wall, "cpu_s": rsl_cpu,
                          "train_return": sum(recent) / len(recent) if recent else None})
    final_eval = ours_curve[-1].get("eval_return")
    if final_eval is None:
        final_eval = agent.evaluate()["eval/episode_reward"]  # as fit() ends every run with an evaluation
    rsl_det = rsl_deterministic_return(runner, seed=args.seed + 1_000_003)
    result = {
        "steps": args.steps, "seed": args.seed, "threads": args.threads,
        "ours": {"wall_s": ours_wall, "sps": agent.step_count / ours_wall, "cpu_s": ours_cpu,
                 "wall_s_to_train_return_ge_-300": ours_marks["train"],
                 "wall_s_to_eval_return_ge_-250": ours_marks["eval"],
                 "cpu_s_to_train_return_ge_-300": ours_marks["train_cpu"],
                 "cpu_s_to_eval_return_ge_-250": ours_marks["eval_cpu"],
                 "final_train_return": ours_curve[-1]["train_return"], "final_eval_return": final_eval,
                 "curve": ours_curve},
        "rsl_rl": {"wall_s": rsl_wall, "sps": len(rsl_curve) * per_iter / rsl_wall, "cpu_s": rsl_cpu,
                   "final_train_return": rsl_curve[-1]["train_return"], "final_deterministic_return": rsl_det,
                   "curve": rsl_curve},
        "machine": machine_info(),
        "command": f"python -m bench.pendulum_default --steps {args.steps} --seed {args.seed} --threads {args.threads}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pendulum_default.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in result.items()
                      if k in ("ours", "rsl_rl")}, indent=1))


if __name__ == "__main__":
    main()
