"""End-to-end training: determinism, interrupt-and-resume, warm start, checkpoint safety."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, REPO, workbench_env
from workbench.agents.common.checkpoint import CheckpointError
from workbench.train import TrainCallbacks, build_agent, run_training

TIMING_KEYS = ("info/sps", "times/")


def comparable(history):
    return [{k: v for k, v in row.items() if not k.startswith(TIMING_KEYS)} for row in history]


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = model_state(a), model_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs"


def test_same_seed_same_metrics(tiny_config, tmp_path):
    cfg = tiny_config("logger.mode=disabled", "seed=7")
    first = run_training(cfg, tmp_path / "a")
    second = run_training(tiny_config("logger.mode=disabled", "seed=7"), tmp_path / "b")
    assert len(first.history) == 8
    assert comparable(first.history) == comparable(second.history)
    assert_same_weights(tmp_path / "a" / "last.ckpt", tmp_path / "b" / "last.ckpt")
    other = run_training(tiny_config("logger.mode=disabled", "seed=8"), tmp_path / "c")
    assert comparable(other.history) != comparable(first.history)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(tiny_config, tmp_path):
    overrides = ("logger.mode=disabled", "agent.save_last_checkpoint_every=2")
    run_training(tiny_config(*overrides), tmp_path / "full")

    def stop_after_five(iteration, metrics):
        if iteration == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(tiny_config(*overrides), tmp_path / "cut", TrainCallbacks(on_iteration=stop_after_five))
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["epoch"] == 5
    resumed = run_training(tiny_config(*overrides), tmp_path / "cut")  # picks up <output_dir>/last.ckpt
    assert len(resumed.history) == 3  # epochs 6, 7, 8
    assert_same_weights(tmp_path / "full" / "last.ckpt", tmp_path / "cut" / "last.ckpt")


@pytest.mark.slow
def test_killed_process_resumes_to_identical_weights(tmp_path):
    """SIGKILL a real `workbench train` after a checkpoint, rerun in the same dir, compare with an uninterrupted run."""
    args = [*TINY, "agent.training_max_steps=16384", "agent.save_last_checkpoint_every=3", "logger.mode=disabled"]

    def train(out: Path):
        return [sys.executable, "-m", "workbench.cli", "train", *args, f"hydra.run.dir={out}"]

    subprocess.run(train(tmp_path / "full"), check=True, env=workbench_env(), cwd=REPO, capture_output=True)
    proc = subprocess.Popen(train(tmp_path / "cut"), env=workbench_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "cut" / "last.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_at < 16, "the run finished before it could be killed; the test proves nothing"
    subprocess.run(train(tmp_path / "cut"), check=True, env=workbench_env(), cwd=REPO, capture_output=True)
    assert_same_weights(tmp_path / "full" / "last.ckpt", checkpoint)


def test_warm_start_loads_weights_only(tiny_config, tmp_path):
    run_training(tiny_config("logger.mode=disabled"), tmp_path / "a")
    source = tmp_path / "a" / "last.ckpt"
    agent = build_agent(tiny_config("logger.mode=disabled", f"checkpoint={source}", "load_training_state=false"), None)
    agent.load_checkpoint(source, load_training_state=False)
    assert agent.epoch == 0 and agent.step_count == 0
    current = agent.model.state_dict()  # [P=1, ...]; the checkpoint holds the single agent's tensors
    for key, value in model_state(source).items():
        if key != "_actor.logstd":
            assert current[key].shape[0] == 1
            assert torch.equal(current[key][0], value)


def test_fixed_logstd_comes_from_config_not_checkpoint(tiny_config, tmp_path):
    run_training(tiny_config("logger.mode=disabled", "agent.model.actor.actor_logstd=-1.0"), tmp_path / "a")
    agent = build_agent(tiny_config("logger.mode=disabled", "agent.model.actor.actor_logstd=-2.0"), None)
    agent.load_checkpoint(tmp_path / "a" / "last.ckpt")
    assert torch.allclose(agent.model.actor.logstd, torch.full_like(agent.model.actor.logstd, -2.0))


def test_corrupt_checkpoint_is_refused_clearly(tiny_config, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    agent = build_agent(tiny_config("logger.mode=disabled"), None)
    with pytest.raises(CheckpointError, match="is not a workbench checkpoint: not a readable torch checkpoint"):
        agent.load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        agent.load_checkpoint(tmp_path / "missing.ckpt")


def test_mismatched_checkpoint_is_refused_clearly(tiny_config, tmp_path):
    run_training(tiny_config("logger.mode=disabled"), tmp_path / "a")
    wider = build_agent(tiny_config("logger.mode=disabled",
                                    "agent.model.critic.models.0.layers.0.units=32"), None)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        wider.load_checkpoint(tmp_path / "a" / "last.ckpt")


def test_checkpoint_refuses_arbitrary_pickles(tiny_config, tmp_path):
    """weights_only loading: a checkpoint carrying an arbitrary object is refused, not executed."""
    evil = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "payload": Interrupt()}, evil)
    agent = build_agent(tiny_config("logger.mode=disabled"), None)
    with pytest.raises(CheckpointError):
        agent.load_checkpoint(evil)


def test_early_termination_and_checkpoint_files(tiny_config, tmp_path):
    result = run_training(tiny_config("logger.mode=disabled", "agent.training_early_termination=3000",
                                      "agent.save_epoch_checkpoint_every=2"), tmp_path / "run")
    assert result.frames == 3072  # three iterations of 64 x 16: the first count >= 3000
    names = sorted(p.name for p in (tmp_path / "run").glob("*.ckpt"))
    assert "epoch_2.ckpt" in names and "last.ckpt" in names and "epoch_4.ckpt" not in names
    assert (tmp_path / "run" / "resolved_config.yaml").is_file()


def test_evaluation_components_give_success_and_failure_rates(tiny_config, tmp_path):
    """Cartpole's out-of-bounds extra as a thresholded component: failures are sticky per env."""
    cfg = tiny_config("env=cartpole", "env.num_envs=64", "logger.mode=disabled", "agent.evaluator.max_eval_steps=60",
                      "+env.reset_noise=0.3",  # spread the starts so only some envs leave the track
                      "+agent.evaluator.evaluation_components={termination/out_of_bounds: {static_params: {threshold: 0.5}}}")
    agent = build_agent(cfg, None)
    metrics = agent.evaluate()
    assert list(metrics) == [0]  # {member: metrics}
    metrics = metrics[0]
    # replay the same evaluation by hand: an env fails once its out_of_bounds extra exceeds 0.5
    env = agent.evaluator.env
    env.load_state_dict(agent.evaluator._initial_state)
    env.reset()
    failed = torch.zeros(env.num_envs, dtype=torch.bool)
    done_ids = torch.empty(0, dtype=torch.long)
    from tensordict import TensorDict
    with torch.no_grad():
        for _ in range(60):
            obs = env.reset(done_ids)
            mu, _ = agent.model.actor.distribution(TensorDict(dict(obs.items()), batch_size=[env.num_envs])
                                                   .unsqueeze(0))  # the member view [1, N]
            step = env.step(mu[0])
            failed |= step.extras["termination/out_of_bounds"] > 0.5
            done_ids = step.dones.nonzero().squeeze(-1)
    expected = failed.float().mean().item()
    assert 0 < expected < 1, "all or no envs failed: the test could not tell per-env failures apart"
    assert metrics["eval/termination/out_of_bounds/failure_rate"] == pytest.approx(expected)
    assert metrics["eval/success_rate"] == pytest.approx(1 - expected)
    assert 0 <= metrics["eval/termination/out_of_bounds/mean"] <= 1


def test_mujoco_task_trains_through_the_gymnasium_adapter(tmp_path):
    from conftest import compose_config
    cfg = compose_config(["env=halfcheetah", "env.num_envs=2", "agent.num_steps=64", "agent.batch_size=64",
                          "agent.num_mini_epochs=1", "agent.training_max_steps=512", "agent.evaluator.max_eval_steps=20",
                          "agent.evaluator.num_envs=1", "logger.mode=disabled", "torch_threads=1"])
    result = run_training(cfg, tmp_path / "run")
    assert len(result.history) == 4 and result.frames == 512
    assert all(row["actor/grad_norm_before_clip"] > 0 for row in result.history)
    assert result.final_eval_return is not None
    state = model_state(tmp_path / "run" / "last.ckpt")
    assert state["_actor.logstd"].shape == (6,)  # HalfCheetah's action dim, filled from the env


@pytest.mark.parametrize("env", ["env=pendulum", "env=cartpole"])
def test_next_values_equal_the_critic_on_each_next_observation(tiny_config, env):
    """The rollout reuses the next step's value for envs that go on; it must equal the reference's
    per-step critic(next_obs) * (1 - terminated), truncations and terminations included."""
    agent = build_agent(tiny_config(env, "env.max_episode_length=7", "logger.mode=disabled",
                                    "+env.reset_noise=0.5" if env == "env=cartpole" else "seed=1"), None)
    reference, original_step = [], agent.env.step

    def step(action):
        result = original_step(action)
        with torch.no_grad():
            value = agent.model.critic(result.obs.clone().unsqueeze(0)).get("value")[0]  # member view [1, N]
        reference.append(value * (~result.terminated).unsqueeze(-1))
        return result

    agent.env.step = step
    buf, _ = agent.collect_rollout()
    assert buf["dones"].any(), "no episode ended: the test would not exercise the bootstrap"
    assert buf["next_value"].shape[0] == 1  # [P, T, N, 1]
    assert torch.equal(buf["next_value"][0], torch.stack(reference))


def test_env_extras_are_logged_as_per_step_mean_and_std_averaged_over_the_rollout(tiny_config):
    agent = build_agent(tiny_config("env=cartpole", "+env.reset_noise=0.5", "logger.mode=disabled"), None)
    seen, original_step = [], agent.env.step

    def step(action):
        result = original_step(action)
        seen.append(result.extras["termination/out_of_bounds"].float().clone())
        return result

    agent.env.step = step
    _, (logs,) = agent.collect_rollout()  # one dict per member
    per_step = torch.stack(seen)  # [T, N]
    assert logs["env/termination/out_of_bounds_mean"] == pytest.approx(per_step.mean(1).mean().item(), abs=1e-6)
    assert logs["env/termination/out_of_bounds_std"] == pytest.approx(per_step.std(1).mean().item(), abs=1e-6)


class ScalarExtras:
    """A member env whose step extras also hold a scalar (one value for all its envs): ``level``,
    10 * tag + the step number; and a per-env tensor ``spread``: (tag + 1) * env index + step."""

    def __init__(self, env, tag: int):
        self.env, self.tag, self.steps = env, tag, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        result = self.env.step(action)
        self.steps += 1
        result.extras["level"] = torch.tensor(10.0 * self.tag + self.steps)
        result.extras["spread"] = (self.tag + 1) * torch.arange(float(self.env.num_envs)) + self.steps
        return result


@pytest.mark.parametrize("members", [1, 2])
def test_scalar_env_extras_are_logged_as_they_are_and_tensors_as_mean_and_std(members):
    """The reference's rule: env/<k> for a scalar extra (averaged over the rollout's steps),
    env/<k>_mean and env/<k>_std for a per-env tensor. A population member logs its own env's."""
    from agent_factory import agent_config
    from workbench.agents.ppo.agent import PPO
    from workbench.envs import PopulationEnv
    from workbench.envs.pendulum import Pendulum

    envs = []

    def member_env(seed):
        envs.append(ScalarExtras(Pendulum(4, seed=seed), tag=len(envs)))
        return envs[-1]

    torch.manual_seed(0)
    env = PopulationEnv(member_env, list(range(members))) if members > 1 else member_env(0)
    agent = PPO(agent_config(num_steps=4), env, seed=list(range(members)))
    _, logs = agent.collect_rollout()
    for p in range(members):
        levels = [10.0 * p + t for t in range(1, 5)]  # the member's scalar at steps 1..4
        assert logs[p]["env/level"] == pytest.approx(sum(levels) / 4)
        assert "env/level_mean" not in logs[p] and "env/level_std" not in logs[p]
        # spread at step t: (p + 1) * [0, 1, 2, 3] + t: mean 1.5 (p + 1) + t, unbiased std (p + 1) sqrt(5 / 3)
        assert logs[p]["env/spread_mean"] == pytest.approx(1.5 * (p + 1) + 2.5)
        assert logs[p]["env/spread_std"] == pytest.approx((p + 1) * math.sqrt(5 / 3))
        assert "env/spread" not in logs[p]


def test_resolved_config_file_is_what_omegaconf_writes(tiny_config, tmp_path):
    from omegaconf import OmegaConf

    from workbench.train import resolved_config, write_resolved_config
    data = resolved_config(tiny_config())
    # values a YAML writer may quote or not: strings that read as numbers, nulls and booleans, unicode
    data["extra"] = {"as_text": ["1e-3", "null", "true", "0x10", "~", ""], "none": None, "unicode": "café ±",
                     "nested": [{"a": 1.5e-07, "b": [1, 2]}, [], {}], "big": 10**20, "inf": float("inf")}
    write_resolved_config(tmp_path, data)
    written = (tmp_path / "resolved_config.yaml").read_text()
    assert written == OmegaConf.to_yaml(OmegaConf.create(data))
    assert OmegaConf.to_container(OmegaConf.load(tmp_path / "resolved_config.yaml")) == data
