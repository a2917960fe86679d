"""The PPO agent's behaviour (docs/agent.md, "The algorithm, step by step"; README, "Where the workbench
differs from the reference") on tiny envs and networks.

Each test instruments the real agent (wrapping ``optimization_step`` or calling its parts)
and compares with an independent computation: plain loops, numpy, torch.distributions.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal, kl_divergence

from agent_factory import (ScriptedEnv, apply_gradients, gae_loop, make_agent, member_obs, params_snapshot,
                           same_params)
from workbench.agents.base.config import EvaluatorConfig, MaxEpisodeLengthManagerConfig
from workbench.agents.common import checkpoint as ckpt
from workbench.agents.common.episode_length import max_episode_length
from workbench.agents.common.gradients import BadGradientError
from workbench.agents.common.member_adam import MemberAdam
from workbench.agents.ppo.config import AdaptiveLRConfig, AdvantageNormalizationConfig
from workbench.agents.ppo.objective import actor_objective
from workbench.envs.base import StepResult
from workbench.envs.pendulum import Pendulum

torch.set_num_threads(1)


def rollout(agent):
    buf, _ = agent.collect_rollout()
    agent.compute_targets(buf)
    return buf


class RecordingAccumulator:
    """Passes every row on to the agent's MeanAccumulator and keeps member 0's values of the rows
    member 0 had (a row whose member mask leaves member 0 out is one a single run never logs)."""

    def __init__(self, acc):
        self.acc = acc
        self.logs: dict[str, torch.Tensor] = {}

    def add(self, values, members=None):
        self.acc.add(values, members)
        if members is None or bool(members[0]):
            self.logs.update({k: torch.as_tensor(v).reshape(-1)[0] for k, v in values.items()})


def record_steps(agent, tamper=None):
    """Wrap agent.optimization_step; return a list of per-batch records (member 0's, of [1, B] batches)."""
    original = agent.optimization_step
    records = []

    def wrapped(batch, acc):
        if tamper is not None:
            tamper(len(records), batch)
        actor_before = params_snapshot(agent.model.actor)
        critic_before = params_snapshot(agent.model.critic)
        recorder = RecordingAccumulator(acc)
        original(batch, recorder)
        records.append({"logs": recorder.logs, "batch": batch.clone(),
                        "actor_same": same_params(agent.model.actor, actor_before),
                        "critic_same": same_params(agent.model.critic, critic_before)})

    agent.optimization_step = wrapped
    return records




def scripted_trajectory(env: ScriptedEnv, T: int):
    """Replay ScriptedEnv's rules by hand: progress after each step, terminated, truncated."""
    N = env.num_envs
    term_at, max_len = env.term_at.tolist(), env.max_episode_length
    progress = [0] * N
    after, term, trunc = [], [], []
    for _ in range(T):
        row_p, row_term, row_trunc = [], [], []
        for n in range(N):
            p = progress[n] + 1
            te = term_at[n] > 0 and p >= term_at[n]
            tr = p >= max_len and not te
            row_p.append(p)
            row_term.append(te)
            row_trunc.append(tr)
            progress[n] = 0 if (te or tr) else p
        after.append(row_p)
        term.append(row_term)
        trunc.append(row_trunc)
    return after, term, trunc


# ---------------------------------------------------------------- rollout, bootstrap, GAE and returns
@pytest.mark.parametrize("normalize_rewards", [False, True])
def test_rollout_bootstrap_gae_and_returns(normalize_rewards):
    T, N, gamma, tau, w = 7, 4, 0.9, 0.8, 0.5
    env = ScriptedEnv(N)
    agent = make_agent(env=env, num_steps=T, batch_size=4, gamma=gamma, tau=tau, task_reward_w=w,
                       normalize_rewards=normalize_rewards)
    after, term, trunc = scripted_trajectory(env, T)
    assert any(map(any, term)) and any(map(any, trunc))  # both kinds of episode end occur
    buf, _ = agent.collect_rollout()
    assert buf["rewards"].shape == (1, T, N)  # [P, T, N]
    raw_rewards = buf["rewards"][0].clone()
    values = buf["value"][0].squeeze(-1).clone()
    torch.testing.assert_close(buf["dones"][0], torch.tensor(term) | torch.tensor(trunc))
    ids = torch.arange(N).float()
    for t in range(T):
        final_obs = torch.stack((torch.tensor(after[t]).float() / 10, ids / 10, torch.ones(N)), -1)
        v_final = agent.model.critic(member_obs(final_obs)).get("value")[0].squeeze(-1)
        expected = torch.where(torch.tensor(term[t]), torch.zeros(()), v_final)  # 0 on termination only
        torch.testing.assert_close(buf["next_value"][0, t].squeeze(-1), expected.detach())
        torch.testing.assert_close(raw_rewards[t], 1.0 + 0.1 * ids + 0.01 * torch.tensor(after[t]).float())
    next_values = buf["next_value"][0].squeeze(-1).clone()

    agent.compute_targets(buf)
    if normalize_rewards:
        # the reward normaliser's variance, from the discounted-return stream by hand (prior: count 1, mean 0, var 1)
        g, stream = [0.0] * N, []
        for t in range(T):
            g = [gamma * gi * (0.0 if te else 1.0) + r for gi, te, r in zip(g, term[t], raw_rewards[t].tolist())]
            stream.extend(g)
        x = np.array(stream)
        m = x.sum() / (len(x) + 1)
        var = (1.0 + m**2 + ((x - m) ** 2).sum()) / (len(x) + 1)
        std = math.sqrt(var + 1e-5)
        assert agent.reward_norm.var.item() == pytest.approx(var, rel=1e-6)
        torch.testing.assert_close(buf["unnormalized_rewards"][0], raw_rewards)
        torch.testing.assert_close(buf["rewards"][0], (raw_rewards / std).clamp(-5, 5))
        v_un, nv_un = values.clamp(-5, 5) * std, next_values.clamp(-5, 5) * std
    else:
        torch.testing.assert_close(buf["rewards"][0], raw_rewards)
        v_un, nv_un = values, next_values
    adv = torch.tensor(gae_loop(raw_rewards.tolist(), v_un.tolist(), nv_un.tolist(), buf["dones"][0].tolist(),
                                gamma, tau))
    torch.testing.assert_close(buf["advantages"][0], adv * w, rtol=1e-5, atol=1e-5)  # scaled by task_reward_w
    returns = adv + v_un  # returns are NOT scaled by task_reward_w
    if normalize_rewards:
        returns = (returns / std).clamp(-5, 5)
    torch.testing.assert_close(buf["returns"][0].squeeze(-1), returns, rtol=1e-5, atol=1e-5)


class BufferEnv(ScriptedEnv):
    """ScriptedEnv with a per-step extra (its progress). ``in_place``: it returns the same obs,
    reward, termination and extra tensors every step, written in place (as IsaacGym-style envs
    keep an obs_buf); otherwise fresh ones. The rollout must be the same either way."""

    def __init__(self, num_envs: int, in_place: bool):
        super().__init__(num_envs)
        self.in_place = in_place
        self._buffers: dict[str, torch.Tensor] = {}

    def _out(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if not self.in_place:
            return value
        if name not in self._buffers:
            self._buffers[name] = value.clone()
        return self._buffers[name].copy_(value)

    def get_obs(self) -> TensorDict:
        return TensorDict({"obs": self._out("obs", super().get_obs().get("obs"))}, batch_size=[self.num_envs])

    def step(self, action: torch.Tensor) -> StepResult:
        step = super().step(action)
        return StepResult(step.obs, self._out("reward", step.reward), self._out("terminated", step.terminated),
                          step.truncated, {"progress": self._out("progress", self.progress.float())})


def test_the_rollout_keeps_each_step_of_an_env_that_reuses_its_buffers():
    T, N = 7, 4
    fresh, fresh_logs = make_agent(env=BufferEnv(N, in_place=False), num_steps=T, batch_size=4).collect_rollout()
    reused, reused_logs = make_agent(env=BufferEnv(N, in_place=True), num_steps=T, batch_size=4).collect_rollout()
    assert len(set(fresh["obs"][0, :, 0, 0].tolist())) > 1  # the obs really change from step to step
    for key in ("obs", "rewards", "dones", "action", "value", "next_value"):
        torch.testing.assert_close(reused[key], fresh[key], rtol=0, atol=0, msg=key)
    assert fresh_logs[0]["env/progress_std"] > 0
    assert reused_logs == fresh_logs  # the per-step extras' means and stds


def test_evaluation_statistics_of_an_env_that_reuses_its_buffers():
    evaluator = EvaluatorConfig(eval_metrics_every=None, max_eval_steps=6, evaluation_components={"progress": {}})
    results = [make_agent(eval_env=BufferEnv(4, in_place=in_place), evaluator=evaluator).evaluate()[0]
               for in_place in (False, True)]
    assert results[0]["eval/progress/max"] > results[0]["eval/progress/min"]
    assert results[1] == results[0]


# ---------------------------------------------------------------- clip-fraction skip
def craft_clipped(batch):
    """Every ratio becomes e (far outside [0.8, 1.2]) and A = -1, so the unclipped term is active."""
    batch.set("neglogp", batch.get("neglogp") + 1.0)
    batch.set("advantages", -torch.ones_like(batch.get("advantages")))


def test_clip_frac_over_threshold_skips_actor_and_critic_for_the_rest_of_the_iteration():
    agent = make_agent(num_envs=4, num_steps=4, batch_size=4, num_mini_epochs=2, actor_clip_frac_threshold=0.6)
    buf = rollout(agent)
    records = record_steps(agent, lambda k, b: craft_clipped(b) if k == 1 else None)
    out = agent.optimize(buf)[0]
    assert len(records) == 8  # 16 samples / 4 x 2 mini-epochs
    first = records[0]
    assert first["logs"]["actor/update_skipped"] == 0.0
    assert not first["actor_same"] and not first["critic_same"]
    assert records[1]["logs"]["actor/clip_frac"].item() == 1.0
    for rec in records[1:]:  # the crafted batch, the rest of this mini-epoch and the next mini-epoch
        assert rec["logs"]["actor/update_skipped"] == 1.0
        assert rec["actor_same"] and rec["critic_same"]
        assert "losses/critic_loss" not in rec["logs"]  # no critic step, so no critic metrics
        assert "actor/ppo_loss" in rec["logs"]  # the actor loss is still computed and logged
    assert out["actor/update_skipped"] == pytest.approx(7 / 8)
    assert out["losses/critic_loss"] == pytest.approx(records[0]["logs"]["losses/critic_loss"].item())

    # the flag resets at the start of the next iteration
    records.clear()
    agent.optimize(rollout(agent))
    assert records[0]["logs"]["actor/update_skipped"] == 0.0 and not records[0]["actor_same"]


def test_without_threshold_the_same_batch_updates_both_networks():
    agent = make_agent(num_envs=4, num_steps=4, batch_size=4, num_mini_epochs=2, actor_clip_frac_threshold=None)
    buf = rollout(agent)
    records = record_steps(agent, lambda k, b: craft_clipped(b) if k == 1 else None)
    agent.optimize(buf)
    assert records[1]["logs"]["actor/clip_frac"].item() == 1.0
    for rec in records:
        assert rec["logs"]["actor/update_skipped"] == 0.0
        assert not rec["actor_same"] and not rec["critic_same"]


def test_clip_frac_at_threshold_does_not_skip():
    # clip_frac must be strictly above the threshold; 2 of 4 samples clipped = 0.5 = threshold
    agent = make_agent(num_envs=4, num_steps=4, batch_size=4, actor_clip_frac_threshold=0.5)
    buf = rollout(agent)

    def half(k, b):
        if k == 0:
            b.set("neglogp", b.get("neglogp") + torch.tensor([1.0, 1.0, 0.0, 0.0]))
    records = record_steps(agent, half)
    agent.optimize(buf)
    assert records[0]["logs"]["actor/clip_frac"].item() == 0.5
    assert all(r["logs"]["actor/update_skipped"] == 0.0 for r in records)


# ---------------------------------------------------------------- bad gradients through the agent
def actor_loss(agent, scale=1.0):  # per member: [P]
    mu, _ = agent.model.actor.distribution(member_obs(torch.randn(8, 3)))
    return mu.square().mean((1, 2)) * scale


def critic_loss(agent, scale=1.0):
    return agent.model.critic(member_obs(torch.randn(8, 3))).get("value").square().mean((1, 2)) * scale


def adam_state(optimizer: MemberAdam):
    """MemberAdam's whole state: moments, step counts, LRs (and member 0's torch-format view of it)."""
    return {"exp_avg": optimizer.exp_avg.clone(), "exp_avg_sq": optimizer.exp_avg_sq.clone(),
            "steps": torch.tensor(optimizer.steps), "lr": optimizer.lr.clone(),
            "member_0": copy.deepcopy(optimizer.member_state_dict(0, len(optimizer.flat.params))["state"])}


def states_equal(a, b) -> bool:
    if a.keys() != b.keys() or a["member_0"].keys() != b["member_0"].keys():
        return False
    if not all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "steps", "lr")):
        return False
    m_a, m_b = a["member_0"], b["member_0"]
    return all(torch.equal(torch.as_tensor(m_a[k][f]), torch.as_tensor(m_b[k][f])) for k in m_a for f in m_a[k])


@pytest.mark.parametrize("name", ["actor", "critic"])
def test_nan_grads_with_fail_on_bad_grads_false_skip_the_step_entirely(name):
    agent = make_agent(fail_on_bad_grads=False)
    module = getattr(agent.model, name)
    optimizer = getattr(agent, f"{name}_optimizer")
    assert optimizer is agent.optimizers[name]
    loss_fn = actor_loss if name == "actor" else critic_loss
    apply_gradients(agent, name, loss_fn(agent))  # a good step: Adam state exists
    params, state = params_snapshot(module), adam_state(optimizer)
    # moments and step counts are there to be compared
    assert state["member_0"] and state["steps"].tolist() == [1.0] and state["exp_avg_sq"].abs().sum() > 0
    logs = apply_gradients(agent, name, loss_fn(agent, float("nan")))
    assert logs[f"{name}/bad_grads_count"] == 1.0
    assert same_params(module, params)  # no parameter moved ...
    assert states_equal(adam_state(optimizer), state)  # ... and no Adam moment or step count changed
    logs = apply_gradients(agent, name, loss_fn(agent))
    assert logs[f"{name}/bad_grads_count"] == 0.0 and not same_params(module, params)


@pytest.mark.parametrize("name", ["actor", "critic"])
def test_nan_grads_with_fail_on_bad_grads_raise_naming_the_network(name):
    agent = make_agent(fail_on_bad_grads=True)
    loss_fn = actor_loss if name == "actor" else critic_loss
    with pytest.raises(BadGradientError, match=name):
        apply_gradients(agent, name, loss_fn(agent, float("nan")))


@pytest.mark.parametrize("check", [True, False])
def test_huge_grad_norm_is_bad_only_with_check_grad_mag(check):
    agent = make_agent(fail_on_bad_grads=False, check_grad_mag=check)
    params = params_snapshot(agent.model.actor)
    logs = apply_gradients(agent, "actor", actor_loss(agent, 1e12))
    assert logs["actor/grad_norm_before_clip"].item() > 1e6
    assert logs["actor/bad_grads_count"] == float(check)
    assert same_params(agent.model.actor, params) is check


@pytest.mark.parametrize("check", [True, False])
def test_grad_norms_always_logged_per_layer_only_with_check_grad_mag(check):
    agent = make_agent(check_grad_mag=check, gradient_clip_val=0.0)
    for name, loss_fn in (("actor", actor_loss), ("critic", critic_loss)):
        module = getattr(agent.model, name)
        logs = apply_gradients(agent, name, loss_fn(agent))
        grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
        total = math.sqrt(sum(float(g.square().sum()) for g in grads.values()))
        assert logs[f"{name}/grad_norm_before_clip"].item() == pytest.approx(total, rel=1e-5)
        assert logs[f"{name}/grad_norm_after_clip"].item() == pytest.approx(total, rel=1e-5)
        layer_keys = {k for k in logs if k.startswith("grad_layers/")}
        if not check:
            assert layer_keys == set()
            continue
        assert layer_keys == {f"grad_layers/{name}/{n}" for n in grads}
        assert "grad_layers/actor/logstd" not in layer_keys  # a frozen logstd gets no gradient
        for n, g in grads.items():
            assert logs[f"grad_layers/{name}/{n}"].item() == pytest.approx(float(g.norm()), rel=1e-5)


def test_agent_clips_each_network_to_gradient_clip_val():
    agent = make_agent(gradient_clip_val=1e-3)
    for name, loss_fn in (("actor", actor_loss), ("critic", critic_loss)):
        module = getattr(agent.model, name)
        logs = apply_gradients(agent, name, loss_fn(agent, 100.0))
        before = logs[f"{name}/grad_norm_before_clip"].item()
        assert before > 1e-3
        assert logs[f"{name}/grad_norm_after_clip"].item() == pytest.approx(1e-3, abs=1e-4)
        clipped = math.sqrt(sum(float(p.grad.square().sum()) for p in module.parameters() if p.grad is not None))
        assert clipped == pytest.approx(1e-3, abs=1e-4)


# ---------------------------------------------------------------- minibatching
def test_minibatch_count_and_every_sample_once_per_mini_epoch():
    T, N, B, E = 6, 4, 8, 3
    agent = make_agent(num_envs=N, num_steps=T, batch_size=B, num_mini_epochs=E)
    buf = rollout(agent)
    # env-major row number, [P=1, T, N]
    buf["marker"] = (torch.arange(N).unsqueeze(0) * T + torch.arange(T).unsqueeze(1)).unsqueeze(0)
    records = record_steps(agent)
    out = agent.optimize(buf)[0]
    assert len(records) == math.ceil(N * T * E / B) == 9
    per_pass = N * T // B
    orders = []
    for e in range(E):
        rows = [r for rec in records[e * per_pass:(e + 1) * per_pass] for r in rec["batch"].get("marker")[0].tolist()]
        assert sorted(rows) == list(range(N * T))  # each sample exactly once per mini-epoch
        orders.append(rows)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # re-shuffled at every pass
    for rec in records:  # row = env * T + t holds the data of (t, env)
        rows = rec["batch"].get("marker")[0]
        t, n = rows % T, rows // T
        torch.testing.assert_close(rec["batch"].get("obs")[0], buf["obs"][0, t, n])
        torch.testing.assert_close(rec["batch"].get("action")[0], buf["action"][0, t, n])
        assert rec["batch"].batch_size == torch.Size([1, B])
    # iteration metrics are means over all minibatches, not the last one
    for key in ("actor/clip_frac", "actor/grad_norm_before_clip", "critic/value_clip_frac", "losses/critic_loss"):
        assert out[key] == pytest.approx(float(np.mean([float(r["logs"][key]) for r in records])), rel=1e-5)


def test_max_epochs_from_steps_and_from_iterations():
    # the reference's example: steps 301, 5 envs, num_steps 3 -> 301 // 5 // 3 = 20
    agent = make_agent(num_envs=5, num_steps=3, batch_size=5, training_max_steps=301)
    assert agent.max_epochs == 20
    agent = make_agent(num_envs=5, num_steps=3, batch_size=5, training_max_steps=301, training_max_iterations=7)
    assert agent.max_epochs == 7  # iterations win over steps


# ---------------------------------------------------------------- stopping, curriculum, evaluator
def test_training_early_termination_stops_at_step_count_and_writes_last_ckpt(tmp_path):
    agent = make_agent(num_envs=4, num_steps=4, training_max_iterations=50, training_early_termination=40,
                       output_dir=tmp_path)
    agent.fit()
    # 16 steps per iteration: 16, 32 < 40, 48 >= 40 -> three iterations
    assert agent.epoch == 3 and agent.step_count == 48
    state = ckpt.load_checked(tmp_path / "last.ckpt")
    assert state["step_count"] == 48 and state["epoch"] == 3


def test_without_early_termination_fit_runs_to_max_epochs(tmp_path):
    agent = make_agent(num_envs=4, num_steps=4, training_max_iterations=2, output_dir=tmp_path)
    agent.fit()
    assert agent.epoch == 2 and (tmp_path / "last.ckpt").is_file()


def test_episode_length_curriculum_formula():
    cfg = MaxEpisodeLengthManagerConfig(start_length=5, end_length=300, transition_epochs=7)
    for epoch, expected in ((0, 5), (3, 131), (7, 300), (100, 300)):  # int(5 + 3/7 * 295) = int(131.43)
        assert max_episode_length(cfg, epoch) == expected
    assert max_episode_length(MaxEpisodeLengthManagerConfig(5, 300, 0), 0) == 5
    assert max_episode_length(MaxEpisodeLengthManagerConfig(5, 300, 0), 50) == 5
    assert max_episode_length(MaxEpisodeLengthManagerConfig(), 50000) == int(5 + 0.5 * 295)  # the defaults


def test_agent_sets_env_episode_length_after_each_iteration():
    env = Pendulum(4, seed=0)
    agent = make_agent(env=env, episode_manager=MaxEpisodeLengthManagerConfig(5, 25, 4))
    assert env.max_episode_length == 200  # the first iteration uses the env default
    seen = []
    for _ in range(5):
        agent.train_iteration()
        seen.append(env.max_episode_length)
    assert seen == [10, 15, 20, 25, 25]


def manual_mean_policy_return(actor, num_envs, seed, steps):
    env = Pendulum(num_envs, seed=seed)
    env.reset()
    total = torch.zeros(num_envs)
    with torch.no_grad():
        for _ in range(steps):
            mu, _ = actor.distribution(env.get_obs().unsqueeze(0))  # the member view [1, N]
            total += env.step(mu[0]).reward
    return total.mean().item()


def test_evaluator_uses_mean_actions_is_deterministic_and_leaves_global_rng_alone():
    eval_env = Pendulum(3, seed=11)
    agent = make_agent(eval_env=eval_env, evaluator=EvaluatorConfig(eval_metrics_every=None, max_eval_steps=12))
    agent.train_iteration()
    rng = torch.get_rng_state()
    first = agent.evaluate()
    assert list(first) == [0]  # {member: metrics}
    assert torch.equal(torch.get_rng_state(), rng)
    second = agent.evaluate()
    assert first == second
    first = first[0]
    # no episode ends within 12 steps, so the score is the mean partial return of the mean policy
    expected = manual_mean_policy_return(agent.model.actor, 3, 11, 12)
    assert first["eval/episode_reward"] == pytest.approx(expected, rel=1e-5)


def test_iteration_after_an_evaluation_still_optimises():
    agent = make_agent(eval_env=Pendulum(2, seed=1), evaluator=EvaluatorConfig(eval_metrics_every=1, max_eval_steps=3))
    first, = agent.train_iteration()
    assert "eval/episode_reward" in first
    params = params_snapshot(agent.model.actor)
    second, = agent.train_iteration()
    assert "actor/ppo_loss" in second and not same_params(agent.model.actor, params)


# ---------------------------------------------------------------- learnable std
@pytest.mark.parametrize("learnable", [False, True])
def test_logstd_moves_only_when_learnable(learnable):
    agent = make_agent(learnable_std=learnable, actor_logstd=-1.0)
    agent.train_iteration()
    moved = not torch.equal(agent.model.actor.logstd.detach(), torch.full((1, 1), -1.0))
    assert moved is learnable


# ---------------------------------------------------------------- adaptive learning rate
def kl_batch(agent, kl_target):
    """A batch and mu whose analytic KL (same sigma) is kl_target, checked with torch.distributions."""
    sigma = agent.model.actor.logstd.exp().detach().unsqueeze(1)  # [P=1, 1, A]
    mu = torch.zeros(1, 6, 1)
    old = mu - sigma * math.sqrt(2 * kl_target)  # (dmu)^2 / (2 sigma^2) = kl_target
    kl = kl_divergence(Normal(old, sigma), Normal(mu, sigma)).sum(-1).mean().item()
    assert kl == pytest.approx(kl_target, rel=1e-4)
    return TensorDict({"mean_action": old}, batch_size=[1, 6]), mu


def test_adaptive_lr_divides_multiplies_floors_and_caps():
    cfg = AdaptiveLRConfig(enabled=True, desired_kl=0.01, min_lr=1e-4, max_lr=3e-3)
    agent = make_agent(adaptive_lr=cfg, actor_lr=1e-3, critic_lr=5e-4)
    actor_lr, critic_lr = 1e-3, 5e-4
    # MemberAdam's per-member LRs ([P]) and member 0's LR as its checkpoint's param group holds it
    groups = lambda opt: [g["lr"] for g in opt.member_state_dict(0, len(opt.flat.params))["param_groups"]]  # noqa: E731
    lrs = lambda: (float(agent.actor_optimizer.lr[0]), float(agent.critic_optimizer.lr[0]))  # noqa: E731
    assert agent.actor_optimizer.lr.shape == (1,) and agent.actor_optimizer.lr.dtype == torch.float64

    high = kl_batch(agent, 0.05)  # > 2 * desired
    for _ in range(8):  # divided by 1.5 each time, floored at min_lr
        logs = agent.adapt_learning_rates(*high)
        actor_lr, critic_lr = max(actor_lr / 1.5, 1e-4), max(critic_lr / 1.5, 1e-4)
        assert lrs() == pytest.approx((actor_lr, critic_lr))
        assert groups(agent.actor_optimizer) == pytest.approx([actor_lr])
        assert groups(agent.critic_optimizer) == pytest.approx([critic_lr])
        assert logs["info/actor_lr"].item() == pytest.approx(actor_lr)
        assert logs["actor/kl"].item() == pytest.approx(0.05, rel=1e-4)
    assert actor_lr == critic_lr == 1e-4

    for kl in (0.0052, 0.01, 0.0198, 0.0):  # between desired/2 and 2*desired, or zero: unchanged
        agent.adapt_learning_rates(*kl_batch(agent, kl))
        assert lrs() == pytest.approx((1e-4, 1e-4))

    low = kl_batch(agent, 0.001)  # < desired / 2
    for _ in range(12):  # multiplied by 1.5, capped at max_lr
        agent.adapt_learning_rates(*low)
        actor_lr, critic_lr = min(actor_lr * 1.5, 3e-3), min(critic_lr * 1.5, 3e-3)
        assert lrs() == pytest.approx((actor_lr, critic_lr))
        assert groups(agent.actor_optimizer) == pytest.approx([actor_lr])
        assert groups(agent.critic_optimizer) == pytest.approx([critic_lr])
    assert actor_lr == critic_lr == 3e-3


def test_adaptive_lr_runs_in_every_minibatch_and_is_logged():
    cfg = AdaptiveLRConfig(enabled=True, desired_kl=0.01, min_lr=1e-5, max_lr=1e-2)
    agent = make_agent(adaptive_lr=cfg, batch_size=4)
    records = record_steps(agent)
    out = agent.optimize(rollout(agent))[0]
    assert len(records) == 4 and all("actor/kl" in r["logs"] for r in records)
    assert out["info/actor_lr"] == pytest.approx(np.mean([float(r["logs"]["info/actor_lr"]) for r in records]))
    opt = agent.actor_optimizer
    assert opt.member_state_dict(0, len(opt.flat.params))["param_groups"][0]["lr"] == pytest.approx(float(opt.lr[0]))
    assert float(opt.lr[0]) == pytest.approx(float(records[-1]["logs"]["info/actor_lr"]))


def test_a_resumed_run_keeps_the_adapted_learning_rates(tmp_path):
    """Deliberate difference (README): ProtoMotions restores the optimizers' state (their learning
    rates already adapted) and then rescales them by adapted / configured a second time, so after a
    resume the rate stepped is lr_saved^2 / lr_config while info/actor_lr shows lr_saved. The
    workbench resumes with lr_saved for both and continues exactly as the uninterrupted run."""
    cfg = AdaptiveLRConfig(enabled=True, desired_kl=1e-18, min_lr=1e-6, max_lr=1e-2)  # every KL is "too high"
    agent = make_agent(adaptive_lr=cfg, actor_lr=1e-3, critic_lr=5e-4, output_dir=tmp_path)
    for _ in range(2):
        agent.train_iteration()
    saved = float(agent.actor_optimizer.lr[0]), float(agent.critic_optimizer.lr[0])
    # 2 iterations x 2 minibatches, each dividing by 1.5
    assert saved == pytest.approx((1e-3 / 1.5 ** 4, 5e-4 / 1.5 ** 4))
    agent.save_checkpoint("last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["adaptive_lr"] == pytest.approx(
        {"actor_lr": saved[0], "critic_lr": saved[1]})

    resumed = make_agent(adaptive_lr=cfg, actor_lr=1e-3, critic_lr=5e-4)
    resumed.load_checkpoint(tmp_path / "last.ckpt")
    assert (float(resumed.actor_optimizer.lr[0]), float(resumed.critic_optimizer.lr[0])) == pytest.approx(saved)
    assert float(resumed.actor_optimizer.lr[0]) != pytest.approx(saved[0] ** 2 / 1e-3)  # the reference's rate
    first, = agent.train_iteration()
    again, = resumed.train_iteration()
    # the mean over the iteration's two minibatches, each dividing by 1.5 again
    assert again["info/actor_lr"] == first["info/actor_lr"] == pytest.approx((saved[0] / 1.5 + saved[0] / 1.5 ** 2) / 2)
    for p, q in zip(agent.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_adv_norm_defaults_apply_inside_the_agent():
    agent = make_agent(adv_norm=AdvantageNormalizationConfig(ema_alpha=0.5))
    buf = rollout(agent)
    raw = buf["advantages"].clone()
    records = record_steps(agent)
    agent.optimize(buf)
    z = (raw / 1.0).clamp(-4, 4)  # the first iteration uses the initial statistics m=0, s=1
    seen = torch.cat([r["batch"].get("advantages")[0] for r in records])
    torch.testing.assert_close(seen.sort().values, z.reshape(-1).sort().values)


# ---------------------------------------------------------------- the actor loss as the agent assembles it
def actor_batch(agent, n=8, seed=0):
    """A [P=1, n] minibatch."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(1, n, 3, generator=g)
    with torch.no_grad():
        td = agent.model(TensorDict({"obs": obs}, batch_size=[1, n]))
    batch = TensorDict({"obs": obs, "action": td.get("action") + 0.3 * torch.randn(1, n, 1, generator=g),
                        "neglogp": td.get("neglogp"), "mean_action": td.get("mean_action"),
                        "advantages": torch.randn(1, n, generator=g)}, batch_size=[1, n])
    return batch


def actor_loss_of(agent, batch):
    """The agent's actor objective (per member, [P])."""
    return actor_objective(agent.model, batch, agent.hp, agent.config.l2c2)


def test_actor_loss_total_with_bounds_and_entropy():
    agent = make_agent(learnable_std=True, actor_logstd=-0.3, entropy_coef=0.1, bounds_loss_coef=0.7)
    batch = actor_batch(agent)
    total, logs, mu = actor_loss_of(agent, batch)
    assert total.shape == (1,) and all(v.shape == (1,) for v in logs.values())
    sigma = agent.model.actor.logstd.exp().detach().unsqueeze(1)
    dist = Normal(mu.detach(), sigma)
    ratio = torch.exp(batch.get("neglogp") + dist.log_prob(batch.get("action")).sum(-1))
    adv = batch.get("advantages")
    ppo = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    mu_list = mu.detach().reshape(-1).tolist()
    bounds = 0.7 * sum(max(m - 1, 0) ** 2 + min(m + 1, 0) ** 2 for m in mu_list) / len(mu_list)
    entropy = dist.entropy().sum(-1).mean()
    assert logs["actor/ppo_loss"].item() == pytest.approx(ppo.item(), rel=1e-5, abs=1e-6)
    assert logs["actor/bounds_loss"].item() == pytest.approx(bounds, rel=1e-5, abs=1e-7)
    assert logs["actor/entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    assert total.item() == pytest.approx(ppo.item() + bounds - 0.1 * entropy.item(), rel=1e-5, abs=1e-6)
    # ProtoMotions logs the entropy itself under entropy_loss (not the weighted term -0.1 * H)
    assert logs["actor/entropy_loss"].item() == pytest.approx(entropy.item(), rel=1e-5)
    assert logs["actor/approx_kl"].item() == pytest.approx((ratio - 1 - torch.log(ratio + 1e-8)).mean().item(),
                                                           rel=1e-4, abs=1e-7)
    agent.flat["actor"].zero_grad()  # the grads are views of the flat buffer, always allocated
    total.sum().backward()
    assert agent.model.actor.logstd.requires_grad
    assert agent.model.actor.logstd.grad.abs().sum() > 0  # the learnable std is trained


def test_fixed_std_has_no_entropy_term():
    agent = make_agent(learnable_std=False, entropy_coef=0.5)
    total, logs, _ = actor_loss_of(agent, actor_batch(agent))
    assert total.item() == pytest.approx(logs["actor/ppo_loss"].item())
    assert logs["actor/entropy_loss"].item() == 0.0


def test_l2c2_loss_hand_computed():
    from workbench.agents.ppo.config import L2C2Config
    agent = make_agent(l2c2=L2C2Config(enabled=True, lambda_l2c2=0.3, obs_pairs={"obs": "obs_clean"}))
    batch = actor_batch(agent)
    clean = batch.get("obs") + 0.1 * torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(9))
    batch.set("obs_clean", clean)
    total, logs, mu = actor_loss_of(agent, batch)
    mu_clean = agent.model.actor.mu(TensorDict({"obs": clean}, batch_size=[1, 8])).get("mu")
    in_dist = (batch.get("obs") - clean).square().sum().item() / clean.numel()
    out_dist = (mu - mu_clean).square().mean().item()
    assert logs["actor/l2c2_input_dist"].item() == pytest.approx(in_dist, rel=1e-5)
    assert logs["actor/l2c2_output_dist"].item() == pytest.approx(out_dist, rel=1e-5)
    assert logs["actor/l2c2_loss"].item() == pytest.approx(out_dist / (in_dist + 1e-8), rel=1e-5)
    assert total.item() == pytest.approx(logs["actor/ppo_loss"].item() + 0.3 * out_dist / (in_dist + 1e-8), rel=1e-5)


def test_l2c2_input_distance_pools_the_actor_inputs_per_member():
    """ProtoMotions: in_dist = sum of squared noisy-clean differences over every element of the
    actor inputs that have a clean pair, divided by their element count (one pooled mean, not a
    sum of per-key means); a pair whose noisy key the actor does not read is ignored."""
    from workbench.agents.common.config import MLPLayerConfig, MLPWithConcatConfig
    from workbench.agents.ppo.config import L2C2Config, PPOActorConfig, PPOModelConfig
    from workbench.agents.ppo.model import PPOModel
    from workbench.agents.ppo.objective import l2c2_terms

    P, B = 2, 4
    mu_model = MLPWithConcatConfig(num_out=1, in_keys=["a", "b"], out_keys=["mu"], layers=[MLPLayerConfig(6, "tanh")])
    critic = MLPWithConcatConfig(num_out=1, in_keys=["a"], out_keys=["value"], layers=[MLPLayerConfig(6, "tanh")])
    model = PPOModel(PPOModelConfig(in_keys=["a", "b", "c"], actor=PPOActorConfig(
        mu_key="mu", in_keys=["a", "b"], mu_model=mu_model, num_out=1), critic=critic), P)
    g = torch.Generator().manual_seed(3)
    data = {k: torch.randn(P, B, d, generator=g) for k, d in (("a", 1), ("b", 2), ("c", 5))}
    data.update({f"{k}_clean": v + torch.randn(v.shape, generator=g) * (0.1 if k == "a" else 0.5)
                 for k, v in list(data.items())})
    batch = TensorDict(data, batch_size=[P, B])
    with torch.no_grad():
        model(batch.clone())  # materialise the lazy layers
    config = L2C2Config(enabled=True, lambda_l2c2=0.5, obs_pairs={"a": "a_clean", "b": "b_clean", "c": "c_clean"})
    mu_noisy, _ = model.actor.distribution(batch)
    logs = l2c2_terms(model, batch, mu_noisy, config)
    mu_clean = model.actor.mu(TensorDict({"a": data["a_clean"], "b": data["b_clean"]}, batch_size=[P, B])).get("mu")
    for p in range(P):
        squares = sum(float((data[k][p] - data[f"{k}_clean"][p]).double().square().sum()) for k in ("a", "b"))
        in_dist = squares / (B * 1 + B * 2)
        out_dist = float((mu_noisy[p] - mu_clean[p]).detach().double().square().mean())
        assert logs["actor/l2c2_input_dist"][p].item() == pytest.approx(in_dist, rel=1e-5)
        assert logs["actor/l2c2_output_dist"][p].item() == pytest.approx(out_dist, rel=1e-5)
        assert logs["actor/l2c2_weighted"][p].item() == pytest.approx(0.5 * out_dist / (in_dist + 1e-8), rel=1e-5)
    with pytest.raises(ValueError, match="none of the actor's inputs"):
        l2c2_terms(model, batch, mu_noisy, L2C2Config(enabled=True, obs_pairs={"c": "c_clean"}))


# ---------------------------------------------------------------- invariants the agent itself must enforce
@pytest.mark.parametrize("iterations", [0, -3])
def test_non_positive_training_max_iterations_raise(iterations):
    with pytest.raises(ValueError, match="training_max_iterations"):
        make_agent(training_max_iterations=iterations)


@pytest.mark.parametrize("batch_size", [3, 32])
def test_batch_size_must_divide_the_rollout(batch_size):
    with pytest.raises((ValueError, AssertionError), match="batch_size"):
        make_agent(num_envs=4, num_steps=4, batch_size=batch_size)


# ---------------------------------------------------------------- episode metrics, optimizer params, obs normalisers
def test_episode_metrics_are_means_over_episodes_finished_this_iteration():
    T, N = 7, 4
    env = ScriptedEnv(N)
    agent = make_agent(env=env, num_steps=T, batch_size=4)
    after, term, trunc = scripted_trajectory(env, T)
    returns, lengths = [], []
    for n in range(N):
        ret = 0.0
        for t in range(T):
            ret += 1.0 + 0.1 * n + 0.01 * after[t][n]
            if term[t][n] or trunc[t][n]:
                returns.append(ret)
                lengths.append(after[t][n])
                ret = 0.0
    _, (logs,) = agent.collect_rollout()
    assert logs["info/episodes_finished"] == len(returns)
    assert logs["info/episode_reward"] == pytest.approx(sum(returns) / len(returns), rel=1e-5)
    assert logs["info/episode_length"] == pytest.approx(sum(lengths) / len(lengths))


def test_episode_metrics_repeat_when_no_episode_finished():
    agent = make_agent(num_envs=2, num_steps=3, batch_size=6)  # Pendulum episodes last 200 steps
    agent.last_episode_metrics = [{"info/episode_reward": -7.0, "info/episode_length": 9.0}]  # per member
    _, (logs,) = agent.collect_rollout()
    assert logs["info/episodes_finished"] == 0
    assert (logs["info/episode_reward"], logs["info/episode_length"]) == (-7.0, 9.0)


def test_each_network_has_its_own_adam_with_every_parameter():
    agent = make_agent(actor_lr=3e-4, critic_lr=7e-4)
    actor_opt, critic_opt = agent.actor_optimizer, agent.critic_optimizer
    actor_params = {id(p) for p in actor_opt.flat.params}
    critic_params = {id(p) for p in critic_opt.flat.params}
    # MemberAdam steps the trainable parameters; a frozen logstd has no gradient and stays out of the
    # flat buffer, but keeps its index in the torch-format state (the checkpoint's param group)
    actor_all = list(agent.model.actor.parameters())
    assert actor_params == {id(p) for p in actor_all if p.requires_grad}
    assert id(agent.model.actor.logstd) not in actor_params and not agent.model.actor.logstd.requires_grad
    logstd_index = next(i for i, p in enumerate(actor_all) if p is agent.model.actor.logstd)
    assert logstd_index not in actor_opt.param_index
    groups = actor_opt.member_state_dict(0, len(actor_all))["param_groups"]
    assert len(groups) == 1 and groups[0]["params"] == list(range(len(actor_all)))  # a frozen logstd is included
    assert critic_params == {id(p) for p in agent.model.critic.parameters()}
    assert not actor_params & critic_params
    assert isinstance(actor_opt, MemberAdam) and isinstance(critic_opt, MemberAdam)
    assert actor_opt.target == critic_opt.target == "torch.optim.Adam"
    assert actor_opt.lr.tolist() == [3e-4] and critic_opt.lr.tolist() == [7e-4]
    assert groups[0]["lr"] == 3e-4
    assert critic_opt.member_state_dict(0, len(critic_opt.flat.params))["param_groups"][0]["lr"] == 7e-4


def obs_norm_count(module) -> float:
    norms = [m.obs_norm for m in module.modules() if getattr(m, "obs_norm", None) is not None]
    assert len(norms) == 1
    return norms[0].count.item()


def test_obs_normalisers_update_only_on_minibatch_forwards():
    B = 4
    agent = make_agent(num_envs=4, num_steps=4, batch_size=B, num_mini_epochs=2, normalize_obs=True)
    actor0, critic0 = obs_norm_count(agent.model.actor), obs_norm_count(agent.model.critic)
    buf = rollout(agent)
    assert (obs_norm_count(agent.model.actor), obs_norm_count(agent.model.critic)) == (actor0, critic0)  # eval mode
    records = record_steps(agent)
    agent.optimize(buf)
    assert not agent.model.training  # back to eval after optimising
    assert obs_norm_count(agent.model.actor) == actor0 + B * len(records)
    assert obs_norm_count(agent.model.critic) == critic0 + B * len(records)
