"""Learning check: our PPO on HalfCheetah-v5 for 1M steps with CleanRL-like settings.

    python -m bench.learning --seed 1 [--variant cleanrl] [--steps 1000000] [HYDRA_OVERRIDES...]

Score = mean raw return of the last 100 training episodes (CleanRL's protocol). Writes
bench/results/learning/<variant>_seed<seed>.json (rewritten every 10 iterations, so a partial
run leaves its curve behind).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.compose import build_ours
from bench.episodes import EpisodeRecorder
from bench.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "learning"

# CleanRL ppo_continuous_action: 1 env, 2048 steps, 10 epochs x 32 minibatches of 64, 64x64 tanh,
# lr 3e-4 (Adam eps 1e-5), gamma 0.99, lambda 0.95, clip 0.2, learnable state-independent std
# (logstd 0), grad clip 0.5, no entropy bonus, per-batch advantage normalisation, obs and reward
# normalisation. conf/tuning/mujoco.yaml already sets most of these; the rest are overrides.
CLEANRL = ["env=halfcheetah", "env.num_envs=1", "agent.num_steps=2048", "agent.batch_size=64",
           "agent.num_mini_epochs=10", "agent.gamma=0.99", "agent.tau=0.95", "agent.e_clip=0.2",
           "agent.gradient_clip_val=0.5", "agent.entropy_coef=0.0", "agent.actor_clip_frac_threshold=null",
           "agent.advantage_normalization.use_ema=false", "agent.model.actor.learnable_std=true",
           "agent.model.actor.actor_logstd=0.0", "agent.normalize_rewards=true", "torch_threads=1"]

VARIANTS = {
    "cleanrl": CLEANRL,
    # CleanRL clips normalised rewards at 10; ours defaults to 5.
    "cleanrl_rclip10": CLEANRL + ["agent.normalized_reward_clamp_value=10.0"],
}

CLEANRL_PUBLISHED = {"mean": 1442.64, "std": 46.03, "source": "CleanRL ppo_continuous_action, HalfCheetah-v4, 1M steps"}


def run(variant: str, seed: int, steps: int, extra: list[str]) -> dict:
    overrides = VARIANTS[variant] + [f"seed={seed}", f"agent.training_max_steps={steps}", *extra]
    agent = build_ours(overrides)
    recorder = EpisodeRecorder(agent.env)
    out = RESULTS / f"{variant}_seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"variant": variant, "seed": seed, "overrides": overrides, "machine": machine_info(),
              "command": f"python -m bench.learning --variant {variant} --seed {seed} --steps {steps}"
                         + "".join(f" {e}" for e in extra),
              "cleanrl_published": CLEANRL_PUBLISHED}

    def save(done: bool) -> None:
        last = recorder.returns[-100:]
        result.update({"done": done, "frames": agent.step_count, "wall_s": time.perf_counter() - started,
                       "episode_returns": recorder.returns, "episode_frames": recorder.frames,
                       "score_last100": sum(last) / len(last) if last else None,
                       "episodes": len(recorder.returns)})
        out.write_text(json.dumps(result))

    while not agent.should_stop():
        agent.train_iteration()
        if agent.epoch % 10 == 0:
            save(False)
    save(True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variant", default="cleanrl", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=1_000_000)
    args, extra = parser.parse_known_args()
    result = run(args.variant, args.seed, args.steps, extra)
    print(json.dumps({k: result[k] for k in ("variant", "seed", "frames", "wall_s", "score_last100", "episodes")}))


if __name__ == "__main__":
    main()
