"""A real training run's W&B file: every iteration's diagnostics are there, and they are the agent's own numbers."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from tensordict import TensorDict

from conftest import TINY, workbench_env
from workbench.agents.ppo.agent import PPO
from workbench.tracking import read_run
from workbench.train import run_training

PER_ITERATION_KEYS = [
    "actor/grad_norm_before_clip", "actor/grad_norm_after_clip", "critic/grad_norm_before_clip",
    "critic/grad_norm_after_clip", "actor/bad_grads_count", "critic/bad_grads_count", "actor/clip_frac",
    "critic/value_clip_frac", "adv_norm/clamp_frac", "losses/actor_loss", "losses/critic_loss", "actor/approx_kl",
    "critic/explained_variance", "adv_norm/mean_ema", "adv_norm/std_ema", "info/episode_reward",
    "info/episode_length", "info/sps", "info/frames", "actor/update_skipped", "actor/entropy",
]
WANDB_CLI = [sys.executable, "-c", "from wandb.cli.cli import cli; cli()"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    subprocess.run([sys.executable, "-m", "workbench.cli", "train", *TINY, "env=pendulum",
                    "agent.training_max_steps=10240", f"hydra.run.dir={out}", "logger.group=e2e", "logger.tags=[a,b]"],
                   check=True, env=workbench_env(), cwd=out, capture_output=True, timeout=300)
    return out


def test_every_iteration_logs_grad_norms_and_clip_fractions(cli_run):
    run = read_run(cli_run)
    history = run.history
    assert len(history) == 10  # 10240 steps / (64 envs x 16 steps)
    for key in PER_ITERATION_KEYS:
        assert key in history.columns, key
        assert history[key].notna().all(), key
    assert history["info/frames"].tolist() == [1024.0 * (i + 1) for i in range(10)]
    layer_keys = [k for k in history.columns if k.startswith("grad_layers/actor/")]
    assert layer_keys and all(history[k].notna().all() for k in layer_keys)
    assert (history["eval/episode_reward"].notna()).sum() >= 2  # every 4 iterations, and a final one
    assert run.group == "e2e" and set(run.tags) == {"a", "b"} and run.job_type == "train"
    assert run.config["agent"]["e_clip"] == 0.2 and run.config["env"]["num_envs"] == 64
    assert run.summary["info/frames"] == 10240


def test_logged_values_match_wandb_leet_inspect(cli_run):
    run = read_run(cli_run)
    proc = subprocess.run([*WANDB_CLI, "leet", "inspect", "--json", str(run.run_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert len(history) == len(run.history)
    for i, item in enumerate(history):
        for key in PER_ITERATION_KEYS:
            assert item[key] == pytest.approx(run.history[key].iloc[i], rel=1e-12), (i, key)


def test_logged_clip_fraction_and_grad_norms_are_recomputed_independently(tiny_config, tmp_path, monkeypatch):
    """Record every minibatch of the third iteration, recompute its diagnostics from scratch, compare with W&B."""
    target_epoch = 2
    recorded = []
    original = PPO.optimization_step

    def recording_step(self, batch, acc):
        if self.epoch == target_epoch:  # skip_updates is updated in place: keep this batch's value
            recorded.append((batch.clone(), copy.deepcopy(self.model), self.skip_updates.clone()))
        return original(self, batch, acc)

    monkeypatch.setattr(PPO, "optimization_step", recording_step)
    cfg = tiny_config("agent.training_max_steps=4096", "agent.gradient_clip_val=0.05", "logger.mode=offline")
    result = run_training(cfg, tmp_path / "run")
    e_clip, clip_val = cfg.agent.e_clip, cfg.agent.gradient_clip_val
    assert len(recorded) == 8  # 64 x 16 samples, batch 256, 2 mini-epochs

    clip_fracs, actor_norms, critic_norms, value_clip_fracs = [], [], [], []
    for batch, model, skipped in recorded:
        assert batch.batch_size[0] == 1 and skipped.shape == (1,)  # [P=1, B] batches, a [P] skip mask
        assert not skipped.any()
        model.eval()  # the normalisers' pre-step statistics, without updating them
        actor, critic = model.actor, model.critic
        mu = actor.mu(TensorDict(dict(batch.items()), batch_size=batch.batch_size)).get(actor.mu_key)
        dist = torch.distributions.Normal(mu, actor.logstd.exp().unsqueeze(1))  # [P, A] -> [P, 1, A]
        ratio = torch.exp(batch["neglogp"] - (-dist.log_prob(batch["action"]).sum(-1)))
        adv = batch["advantages"]
        actor_loss = torch.stack([-adv * ratio, -adv * ratio.clamp(1 - e_clip, 1 + e_clip)]).max(0).values.mean()
        params = [p for p in actor.parameters() if p.requires_grad]
        grads = torch.autograd.grad(actor_loss, params)
        actor_norms.append(torch.sqrt(sum((g ** 2).sum() for g in grads)).item())
        clip_fracs.append(((ratio - 1).abs() > e_clip).float().mean().item())

        # the critic steps after the actor, on the same batch; its parameters were not touched by the actor step
        v = critic(TensorDict(dict(batch.items()), batch_size=batch.batch_size)).get("value")
        v_old, ret = batch["value"], batch["returns"]
        v_clipped = v_old + (v - v_old).clamp(-e_clip, e_clip)
        critic_loss = torch.max((v - ret) ** 2, (v_clipped - ret) ** 2).mean()
        grads = torch.autograd.grad(critic_loss, list(critic.parameters()))
        critic_norms.append(torch.sqrt(sum((g ** 2).sum() for g in grads)).item())
        value_clip_fracs.append(((v_clipped - ret) ** 2 > (v - ret) ** 2).float().mean().item())

    logged = read_run(tmp_path / "run").history.set_index("info/frames").loc[float((target_epoch + 1) * 1024)]
    mean = lambda xs: sum(xs) / len(xs)
    assert logged["actor/clip_frac"] == pytest.approx(mean(clip_fracs), abs=1e-6)
    assert logged["critic/value_clip_frac"] == pytest.approx(mean(value_clip_fracs), abs=1e-6)
    assert logged["actor/grad_norm_before_clip"] == pytest.approx(mean(actor_norms), rel=1e-4)
    assert logged["critic/grad_norm_before_clip"] == pytest.approx(mean(critic_norms), rel=1e-4)
    assert logged["actor/grad_norm_after_clip"] == pytest.approx(mean([min(n, clip_val) for n in actor_norms]), rel=1e-4)
    assert logged["critic/grad_norm_after_clip"] == pytest.approx(mean([min(n, clip_val) for n in critic_norms]), rel=1e-4)
    assert result.wandb_run_id == read_run(tmp_path / "run").run_id
