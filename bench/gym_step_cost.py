"""Where a GymVectorEnv step's time goes, beyond MuJoCo's own step.

    python -m bench.gym_step_cost [--gym-id HalfCheetah-v5] [--num-envs 8] [--steps 50] [--rounds 60]
                                  [--baseline-ref GIT_REF]

Times, in interleaved rounds on one thread, the same random actions through five layers,
each adding one thing to the one before:

- ``mj_step``: ``mujoco.mj_step`` x frame_skip on the raw model (the physics alone);
- ``env.step``: the unwrapped gymnasium env (physics + obs + reward + info dict);
- ``wrapped``: the env as ``gym.make`` builds it (TimeLimit, OrderEnforcing, PassiveEnvChecker);
- ``make_vec``: ``gym.make_vec`` sync vector env with autoreset disabled (what the adapter drove before);
- ``adapter``: ``GymVectorEnv.step`` (torch action in, TensorDict + flag tensors out);
- ``adapter@REF`` (with ``--baseline-ref``): the adapter as committed at a git ref, for a
  before/after under the same machine load.

Reports microseconds per sub-env step (the min over rounds, the least disturbed by other
load, and the median) and each layer's ratio to ``env.step`` (the median over rounds of
the ratio within a round, so rounds slowed by other load cancel out).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch

from workbench.envs.gym_adapter import GymVectorEnv


def time_loop(step, reset, steps: int, episode: int) -> float:
    """Seconds for ``steps`` calls of ``step(t)``, resetting every ``episode`` steps (outside the clock)."""
    total = 0.0
    for start in range(0, steps, episode):
        reset()
        begin = time.perf_counter()
        for t in range(start, min(start + episode, steps)):
            step(t)
        total += time.perf_counter() - begin
    return total


def adapter_at(ref: str) -> type:
    """``GymVectorEnv`` as ``workbench/envs/gym_adapter.py`` was at git ``ref``."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:workbench/envs/gym_adapter.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "gym_adapter_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gym_adapter_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.GymVectorEnv


def build_layers(gym_id: str, num_envs: int, unit: np.ndarray, actions: np.ndarray, seed: int) -> dict:
    """name -> (step(t), reset()) for one vector step of ``num_envs`` sub-envs.

    The gymnasium layers get ``actions`` (on the Box); the adapter gets ``unit`` (in [-1, 1]),
    which it maps onto the same Box values.
    """
    raw = [gym.make(gym_id).unwrapped for _ in range(num_envs)]
    wrapped = [gym.make(gym_id) for _ in range(num_envs)]
    for i, env in enumerate(raw + wrapped):
        env.reset(seed=seed + i)
    vec = gym.make_vec(gym_id, num_envs=num_envs, vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED})
    adapter = GymVectorEnv(gym_id, num_envs=num_envs, seed=seed)
    torch_unit = torch.from_numpy(unit.astype(np.float32))
    frame_skip = raw[0].frame_skip

    def mj_step(t):
        for i, env in enumerate(raw):
            env.data.ctrl[:] = actions[t, i]
            for _ in range(frame_skip):
                mujoco.mj_step(env.model, env.data)

    def env_step(t):
        for i, env in enumerate(raw):
            env.step(actions[t, i])

    def wrapped_step(t):
        for i, env in enumerate(wrapped):
            env.step(actions[t, i])

    return {
        "mj_step": (mj_step, lambda: [env.reset() for env in raw]),
        "env.step": (env_step, lambda: [env.reset() for env in raw]),
        "wrapped": (wrapped_step, lambda: [env.reset() for env in wrapped]),
        "make_vec": (lambda t: vec.step(actions[t]), lambda: vec.reset()),
        "adapter": (lambda t: adapter.step(torch_unit[t]), lambda: adapter.reset()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gym-id", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="vector steps per layer per round")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--episode", type=int, default=200, help="steps between resets (below the time limit)")
    parser.add_argument("--baseline-ref", help="also time the adapter as committed at this git ref")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    probe = gym.make(args.gym_id)
    low, high = probe.action_space.low, probe.action_space.high
    probe.close()
    rng = np.random.default_rng(0)
    unit = rng.uniform(-1, 1, size=(args.steps, args.num_envs, low.shape[0]))
    actions = low + (unit + 1) / 2 * (high - low)
    layers = build_layers(args.gym_id, args.num_envs, unit, actions, seed=0)
    if args.baseline_ref:
        baseline = adapter_at(args.baseline_ref)(args.gym_id, num_envs=args.num_envs, seed=0)
        torch_unit = torch.from_numpy(unit.astype(np.float32))
        layers[f"adapter@{args.baseline_ref}"] = (lambda t: baseline.step(torch_unit[t]), baseline.reset)

    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.rounds):
        for name, (step, reset) in layers.items():
            seconds = time_loop(step, reset, args.steps, args.episode)
            times[name].append(seconds / (args.steps * args.num_envs) * 1e6)

    print(f"{args.gym_id}, {args.num_envs} envs, {args.steps} steps x {args.rounds} rounds, 1 thread; "
          "us per sub-env step (min, median over rounds), ratio to env.step (median of per-round ratios)")
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, times["env.step"]))
        print(f"  {name:16s} {min(values):7.2f} us  {statistics.median(values):7.2f} us  x{ratio:5.2f}")

if __name__ == "__main__":
    main()
