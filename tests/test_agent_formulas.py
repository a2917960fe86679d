"""PPO's formulas, each checked against an independent computation (docs/agent.md, "The algorithm, step by step").

References used here: torch.distributions, plain Python loops over floats, numpy, and
small hand-worked examples. No expected value is taken from running the code under test.
"""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal, kl_divergence

from agent_factory import actor_config, agent_config, gae_loop, make_agent, mlp, model_config
from workbench.agents.common.flat_params import FlatParameters, quiet_layout_warning
from workbench.agents.common.gradients import BadGradientError, inspect_and_clip
from workbench.agents.common.running_mean_std import RewardNormalizer, RunningMeanStd
from workbench.agents.common.stacked import StackedLinear
from workbench.agents.ppo import losses
from workbench.agents.ppo.advantage_norm import AdvantageNormalizer
from workbench.agents.ppo.config import AdvantageNormalizationConfig, PPOActorConfig, PPOModelConfig
from workbench.agents.ppo.model import PPOActor, PPOModel, gaussian_neglogp
from workbench.agents.ppo.population import MemberHyperparams

torch.set_num_threads(1)


def obs_td(n: int, dim: int = 3, seed: int = 0) -> TensorDict:
    """n observations as the single agent's member view: batch [1, n]."""
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"obs": torch.randn(1, n, dim, generator=g)}, batch_size=[1, n])


# ---------------------------------------------------------------- 1. the Gaussian policy
def test_gaussian_neglogp_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(64, 3, generator=g)
    logstd = torch.tensor([-2.9, -0.5, 0.7])
    a = mu + torch.randn(64, 3, generator=g) * 2.0
    expected = -Normal(mu, logstd.exp()).log_prob(a).sum(-1)
    got = gaussian_neglogp(a, mu, logstd.expand_as(mu))
    assert got.shape == (64,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_neglogp_hand_worked():
    # one dim, a - mu = 2, sigma = 1: 2 + 0 + log(2 pi)/2
    got = gaussian_neglogp(torch.tensor([[3.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]))
    assert got.item() == pytest.approx(2.0 + 0.5 * math.log(2 * math.pi), rel=1e-6)


def test_actor_forward_writes_action_mean_and_neglogp():
    torch.manual_seed(0)
    actor = PPOActor(actor_config(num_out=2, actor_logstd=-0.7))
    td = actor(obs_td(16))
    mu, action, nlp = td.get("mean_action"), td.get("action"), td.get("neglogp")
    assert mu.shape == action.shape == (1, 16, 2) and nlp.shape == (1, 16)
    torch.testing.assert_close(mu, td.get("mu"))  # mean_action is the mu_model's output
    std = torch.full((2,), math.exp(-0.7))
    torch.testing.assert_close(nlp, -Normal(mu, std).log_prob(action).sum(-1), rtol=1e-5, atol=1e-5)
    assert not torch.equal(action, mu)  # a sample, not the mean


def test_actor_samples_are_normal_around_mu_without_tanh_or_clipping():
    torch.manual_seed(0)
    logstd = 0.5  # sigma ~ 1.65, so an unclipped sample regularly leaves [-1, 1]
    actor = PPOActor(actor_config(num_out=2, actor_logstd=logstd))
    n = 20000
    td = actor(TensorDict({"obs": torch.zeros(1, n, 3)}, batch_size=[1, n]))  # one state: one mu
    noise = (td.get("action") - td.get("mean_action"))[0]
    sigma = math.exp(logstd)
    se = sigma / math.sqrt(n)
    assert noise.mean(0).abs().max().item() < 5 * se
    torch.testing.assert_close(noise.std(0), torch.full((2,), sigma), rtol=0.03, atol=0)
    assert td.get("action").abs().max().item() > 3.0  # no tanh, no clip to [-1, 1]


def test_population_actor_draws_each_members_noise_from_its_generator_with_and_without_autograd():
    """Member p's noise is what its own generator draws, whether autograd is off (the rollout's
    reused buffer) or on (a fresh tensor each call, so a graph through two samples backpropagates)."""
    P, n, seeds = 3, 4, (5, 6, 7)
    actor = PPOActor(actor_config(num_out=2, actor_logstd=-0.5, learnable_std=True), num_members=P)
    obs = TensorDict({"obs": torch.randn(P * n, 3, generator=torch.Generator().manual_seed(2))}, batch_size=[P * n])

    def draws(grad: bool) -> list[torch.Tensor]:
        actor.generators = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.set_grad_enabled(grad):
            tds = [actor(obs.clone(False)) for _ in range(2)]
        return [td.get("action") - td.get("mean_action") for td in tds], tds

    (off, _), (on, tds) = draws(False), draws(True)
    std = math.exp(-0.5)
    for step in range(2):
        for p, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(seed)
            expected = [torch.randn(n, 2, generator=g) for _ in range(2)][step] * std
            rows = slice(p * n, (p + 1) * n)
            torch.testing.assert_close(off[step][rows], expected, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(on[step][rows].detach(), expected, rtol=1e-6, atol=1e-6)
    # a loss through both samples (reparameterised): the first draw's noise is still intact
    sum(td.get("action").square().sum() for td in tds).backward()
    assert actor.logstd.grad is not None and torch.isfinite(actor.logstd.grad).all()


@pytest.mark.parametrize("learnable", [False, True])
def test_logstd_is_frozen_unless_learnable(learnable):
    actor = PPOActor(actor_config(num_out=3, actor_logstd=-1.3, learnable_std=learnable))
    assert actor.logstd.shape == (1, 3)
    torch.testing.assert_close(actor.logstd.detach(), torch.full((1, 3), -1.3))
    assert actor.logstd.requires_grad is learnable
    # the std does not depend on the state
    mu, logstd = actor.distribution(obs_td(5))
    torch.testing.assert_close(logstd, torch.full((1, 5, 3), -1.3))


def test_model_writes_value_of_shape_b_1():
    torch.manual_seed(0)
    model = PPOModel(model_config(num_out=2))
    td = model(obs_td(7))
    for key, shape in (("action", (1, 7, 2)), ("mean_action", (1, 7, 2)), ("neglogp", (1, 7)), ("value", (1, 7, 1))):
        assert td.get(key).shape == shape, key


def test_actor_out_keys_must_hold_action_mean_action_and_neglogp():
    cfg = actor_config()
    cfg.out_keys = ["action", "mean_action"]
    with pytest.raises(ValueError, match="neglogp"):
        PPOActor(cfg)


def test_model_in_keys_must_cover_actor_and_critic_in_keys():
    cfg = model_config()
    cfg.in_keys = ["other"]
    with pytest.raises(ValueError, match="obs"):
        PPOModel(cfg)


def test_model_out_keys_must_cover_actor_and_critic_out_keys():
    cfg = model_config()
    cfg.out_keys = ["action", "mean_action", "neglogp"]
    with pytest.raises(ValueError, match="value"):
        PPOModel(cfg)


# ---------------------------------------------------------------- 2. GAE


def test_gae_against_python_loop_with_terminations_and_truncations():
    gamma, tau = 0.9, 0.8
    T, N = 6, 3
    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(T, N, generator=g)
    values = torch.randn(T, N, generator=g)
    v_final = torch.randn(T, N, generator=g)  # critic on the (pre-reset) next observation
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[1, 0] = terminated[4, 2] = True
    truncated[2, 1] = truncated[3, 0] = True
    dones = terminated | truncated
    # as the agent builds it: 0 on termination, V(final obs) on truncation and otherwise
    next_values = torch.where(terminated, torch.zeros(()), v_final)
    adv = losses.compute_gae(rewards, values, next_values, dones, gamma, tau)
    expected = gae_loop(rewards.tolist(), values.tolist(), next_values.tolist(), dones.tolist(), gamma, tau)
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-6)

    # the truncated step (t=2, env 1) bootstraps from V(final obs) and the recursion is cut
    assert adv[2, 1].item() == pytest.approx(rewards[2, 1].item() + gamma * v_final[2, 1].item() - values[2, 1].item(),
                                             abs=1e-6)
    # the terminated step (t=1, env 0) has no bootstrap at all
    assert adv[1, 0].item() == pytest.approx(rewards[1, 0].item() - values[1, 0].item(), abs=1e-6)
    # the last step bootstraps through V'_{T-1} (env 1 is not done there)
    assert adv[T - 1, 1].item() == pytest.approx(
        rewards[T - 1, 1].item() + gamma * v_final[T - 1, 1].item() - values[T - 1, 1].item(), abs=1e-6)


def test_gae_hand_worked_two_steps():
    # T=2, one env, no done: d1 = 1 + 0.5*2 - 1 = 1; d0 = 0 + 0.5*1 - 0 = 0.5; A0 = 0.5 + 0.5*0.5*1 = 0.75
    adv = losses.compute_gae(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]]),
                             torch.tensor([[False], [False]]), 0.5, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.75], [1.0]]))


# ---------------------------------------------------------------- 3. running moments and reward normalisation
def test_welford_from_empty_matches_numpy_over_the_concatenated_stream():
    rng = np.random.default_rng(0)
    rms = RunningMeanStd((2,))
    rms.count.zero_()  # no prior pseudo-sample: the statistics are then those of the stream alone
    chunks = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (5, 1, 17, 3, 40)]
    for c in chunks:
        rms.update(torch.tensor(c, dtype=torch.float32).unsqueeze(0))  # [P=1, B, 2]
    stream = np.concatenate(chunks).astype(np.float32).astype(np.float64)
    assert rms.mean.shape == rms.var.shape == (1, 2) and rms.count.shape == (1,)
    np.testing.assert_allclose(rms.mean[0].numpy(), stream.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var[0].numpy(), stream.var(0), rtol=1e-10)  # population variance
    assert rms.count.item() == len(stream)
    assert rms.mean.dtype == rms.var.dtype == torch.float64


def test_welford_from_initial_state_treats_it_as_one_sample_of_mean_0_var_1():
    rng = np.random.default_rng(1)
    rms = RunningMeanStd((1,))
    assert (rms.mean.item(), rms.var.item(), rms.count.item()) == (0.0, 1.0, 1.0)
    chunks = [rng.normal(-1.0, 0.5, size=(n, 1)) for n in (4, 9, 2)]
    for c in chunks:
        rms.update(torch.tensor(c).unsqueeze(0))
    x = np.concatenate(chunks)[:, 0]
    # pooled: a pseudo-group {count 1, mean 0, M2 1} plus the data
    n = len(x) + 1
    m = x.sum() / n
    var = (1.0 + (0.0 - m) ** 2 + ((x - m) ** 2).sum()) / n
    assert rms.mean.item() == pytest.approx(m, rel=1e-12)
    assert rms.var.item() == pytest.approx(var, rel=1e-12)


def test_ema_moments_against_a_hand_loop():
    d = 0.9
    rms = RunningMeanStd((1,), ema_decay=d)
    rng = np.random.default_rng(2)
    m, v = 0.0, 1.0
    for _ in range(6):
        x = rng.normal(2.0, 3.0, size=7)
        rms.update(torch.tensor(x).view(1, -1, 1))
        bm = sum(x) / len(x)
        bv = sum((xi - bm) ** 2 for xi in x) / len(x)
        m = d * m + (1 - d) * bm
        v = d * v + (1 - d) * bv
    assert rms.mean.item() == pytest.approx(m, rel=1e-12)
    assert rms.var.item() == pytest.approx(v, rel=1e-12)


def test_running_mean_std_norm_unnorm_hand_worked():
    rms = RunningMeanStd((1,), clamp_value=5.0)
    rms.mean.fill_(1.0)
    rms.var.fill_(4.0 - 1e-5)  # sqrt(var + 1e-5) = 2
    torch.testing.assert_close(rms.norm(torch.tensor([[[5.0], [-100.0], [2.0]]])),
                               torch.tensor([[[2.0], [-5.0], [0.5]]]))
    torch.testing.assert_close(rms.unnorm(torch.tensor([[[2.0], [7.0]]])), torch.tensor([[[5.0], [11.0]]]))


def test_reward_norm_scales_only_with_clamp_5_and_eps_1e_5():
    rn = RewardNormalizer(num_envs=2, gamma=0.99)
    rn.mean.fill_(123.0)  # never used: no mean shift for rewards
    rn.var.fill_(4.0 - 1e-5)
    torch.testing.assert_close(rn.norm(torch.tensor([[[3.0], [12.0], [-30.0]]])),
                               torch.tensor([[[1.5], [5.0], [-5.0]]]))
    # de-normalising pre-clamps to +-5
    torch.testing.assert_close(rn.unnorm(torch.tensor([[[1.5], [-9.0]]])), torch.tensor([[[3.0], [-10.0]]]))
    rn.var.fill_(0.0)  # the eps alone: sqrt(1e-5)
    assert rn.norm(torch.tensor([[[0.001]]])).item() == pytest.approx(0.001 / math.sqrt(1e-5), rel=1e-5)


def test_reward_norm_return_resets_on_termination_only():
    gamma = 0.5
    rn = RewardNormalizer(num_envs=3, gamma=gamma)
    rn.count.zero_()  # stream statistics only, for the numpy comparison below
    steps = [  # rewards, terminated, truncated (truncation is invisible to the normaliser)
        ([1.0, 2.0, 3.0], [False, False, False], [False, False, False]),
        ([1.0, 2.0, 3.0], [True, False, False], [False, True, False]),
        ([4.0, 1.0, -1.0], [False, False, False], [False, False, True]),
        ([2.0, 2.0, 2.0], [False, True, False], [False, False, False]),
    ]
    g = [0.0, 0.0, 0.0]
    seen = []
    for r, term, _trunc in steps:
        g = [gamma * gi * (0.0 if ti else 1.0) + ri for gi, ti, ri in zip(g, term, r)]
        seen.extend(g)
        rn.record_reward(torch.tensor([r]), torch.tensor([term]))  # [P=1, N]
    # hand-worked, the step's own flag multiplying the old G:
    # env0 1, 1 (terminated: the old G is dropped), 4.5, 4.25;
    # env1 2, 3 (truncated: NOT reset, 0.5*2+2), 2.5, 2 (terminated); env2 3, 4.5, 1.25 (truncated), 2.625
    assert g == [4.25, 2.0, 2.625]
    torch.testing.assert_close(rn.discounted_return, torch.tensor([g]))
    assert rn.var.item() == pytest.approx(np.var(np.array(seen)), rel=1e-9)


def test_reward_norm_ema_variant_uses_the_return_moments():
    rn = RewardNormalizer(num_envs=2, gamma=0.9, ema_decay=0.8)
    rn.record_reward(torch.tensor([[1.0, 3.0]]), torch.tensor([[False, False]]))
    # G = [1, 3]: batch var 1 -> var = 0.8 * 1 + 0.2 * 1 = 1; second step G = [1.9, 5.7]: var_b = 3.61
    rn.record_reward(torch.tensor([[1.0, 3.0]]), torch.tensor([[False, False]]))
    assert rn.var.item() == pytest.approx(0.8 * 1.0 + 0.2 * 3.61, rel=1e-6)


# ---------------------------------------------------------------- 4. advantage normalisation
def adv_cfg(**kw) -> AdvantageNormalizationConfig:
    return AdvantageNormalizationConfig(**kw)


def adv_normalizer(**kw) -> AdvantageNormalizer:
    """The single agent's normaliser (a population of one) with these advantage settings."""
    return AdvantageNormalizer(MemberHyperparams([agent_config(adv_norm=adv_cfg(**kw))], torch.device("cpu")))


def normalize(norm: AdvantageNormalizer, adv: torch.Tensor):
    """``adv`` (any shape) as member 0's whole rollout: z in ``adv``'s shape, the logs every member
    has and the EMA logs, as member 0's scalars."""
    z, logs, ema_logs = norm(adv.reshape(1, -1))
    assert z.shape == (1, adv.numel())
    assert all(v.shape == (1,) for v in (*logs.values(), *ema_logs.values()))
    member0 = lambda d: {k: v[0] for k, v in d.items()}  # noqa: E731
    return z.reshape(adv.shape), member0(logs), member0(ema_logs)


def test_adv_norm_ema_hand_worked():
    norm = adv_normalizer(ema_alpha=0.5, clamp_range=2.0, min_std=0.02)
    norm.mean_ema.fill_(1.0)  # the *previous* statistics
    norm.std_ema.fill_(2.0)
    adv = torch.tensor([[0.0, 1.0], [2.0, 10.0]])
    z, logs, ema_logs = normalize(norm, adv)
    # z = (A - 1) / 2 = [-0.5, 0, 0.5, 4.5] -> clamped at 2
    torch.testing.assert_close(z, torch.tensor([[-0.5, 0.0], [0.5, 2.0]]))
    assert ema_logs["adv_norm/clamp_frac"].item() == pytest.approx(0.25)
    # restored = z_c * 2 + 1 = [0, 1, 2, 5]: mean 2, unbiased var 14/3
    assert norm.mean_ema.item() == pytest.approx(0.5 * 2.0 + 0.5 * 1.0, rel=1e-6)
    assert norm.std_ema.item() == pytest.approx(0.5 * (math.sqrt(14 / 3) + 1e-8) + 0.5 * 2.0, rel=1e-6)
    assert ema_logs["adv_norm/mean_ema"].item() == pytest.approx(1.5, rel=1e-6)
    assert ema_logs["adv_norm/std_ema"].item() == pytest.approx(norm.std_ema.item())
    # raw statistics are logged from the un-normalised advantages (unbiased std)
    assert logs["adv_norm/raw_mean"].item() == pytest.approx(13 / 4)
    assert logs["adv_norm/raw_std"].item() == pytest.approx(statistics.stdev([0, 1, 2, 10]), rel=1e-6)
    assert (logs["adv_norm/raw_min"].item(), logs["adv_norm/raw_max"].item()) == (0.0, 10.0)


def test_adv_norm_ema_starts_at_mean_0_std_1_and_floors_std_at_min_std():
    norm = adv_normalizer()
    assert norm.mean_ema.shape == norm.std_ema.shape == (1,)
    assert (norm.mean_ema.item(), norm.std_ema.item()) == (0.0, 1.0)
    z, _, _ = normalize(norm, torch.tensor([0.5, -3.0, 7.0]))  # divided by 1, clipped to +-4
    torch.testing.assert_close(z, torch.tensor([0.5, -3.0, 4.0]))
    norm.mean_ema.fill_(0.0)
    norm.std_ema.fill_(0.001)  # below min_std 0.02
    z, _, _ = normalize(norm, torch.tensor([0.01, -0.03, 1.0]))
    torch.testing.assert_close(z, torch.tensor([0.5, -1.5, 4.0]))


def test_adv_norm_ema_without_mean_shift():
    norm = adv_normalizer(shift_mean=False, ema_alpha=0.5, clamp_range=2.0)
    norm.mean_ema.fill_(100.0)  # ignored for the scaling
    norm.std_ema.fill_(2.0)
    z, _, ema_logs = normalize(norm, torch.tensor([2.0, -2.0, 6.0, 0.0]))
    torch.testing.assert_close(z, torch.tensor([1.0, -1.0, 2.0, 0.0]))
    # restored = z_c * 2 = [2, -2, 4, 0]: mean 1, unbiased var ((1+9+9+1)/3)
    assert norm.mean_ema.item() == pytest.approx(0.5 * 1.0 + 0.5 * 100.0)
    assert norm.std_ema.item() == pytest.approx(0.5 * (math.sqrt(20 / 3) + 1e-8) + 0.5 * 2.0, rel=1e-6)
    assert ema_logs["adv_norm/clamp_frac"].item() == pytest.approx(0.25)


def test_adv_norm_batch_statistics_when_not_ema():
    norm = adv_normalizer(use_ema=False)
    a = [1.0, 2.0, 3.0, 14.0]
    z, logs, _ = normalize(norm, torch.tensor(a))
    mean, sd = statistics.mean(a), statistics.stdev(a)
    torch.testing.assert_close(z, torch.tensor([(x - mean) / (sd + 1e-8) for x in a]))  # no clamp
    assert (norm.mean_ema.item(), norm.std_ema.item()) == (0.0, 1.0)  # EMA state untouched
    assert "adv_norm/clamp_frac" not in logs
    norm = adv_normalizer(use_ema=False, shift_mean=False)
    z, _, _ = normalize(norm, torch.tensor(a))
    torch.testing.assert_close(z, torch.tensor([x / (sd + 1e-8) for x in a]))


def test_adv_norm_ema_metrics_are_logged_only_by_members_that_use_the_ema():
    # the normaliser returns the EMA logs apart; the agent logs them for EMA members only
    for use_ema in (False, True):
        agent = make_agent(adv_norm=adv_cfg(use_ema=use_ema))
        buf, _ = agent.collect_rollout()
        agent.compute_targets(buf)
        logs = agent.optimize(buf)[0]
        assert "adv_norm/raw_mean" in logs
        for key in ("adv_norm/clamp_frac", "adv_norm/mean_ema", "adv_norm/std_ema"):
            assert (key in logs) is use_ema, key


def test_adv_norm_disabled_keeps_advantages():
    norm = adv_normalizer(enabled=False)
    a = torch.tensor([1.0, -50.0, 3.0])
    z, logs, _ = normalize(norm, a)
    torch.testing.assert_close(z, a)
    assert "adv_norm/raw_mean" in logs and (norm.mean_ema.item(), norm.std_ema.item()) == (0.0, 1.0)


# ---------------------------------------------------------------- 5. clipped actor loss
def test_ppo_actor_loss_against_elementwise_python():
    eps = 0.2
    adv = [1.0, -1.0, 2.0, -0.5, 0.3, -2.0, 0.0, 1.5]
    ratio = [1.5, 1.5, 0.5, 0.5, 1.1, 0.9, 3.0, 1.0]
    expected = 0.0
    for a, r in zip(adv, ratio):
        r_clip = min(max(r, 1 - eps), 1 + eps)
        expected += max(-a * r, -a * r_clip)
    expected /= len(adv)
    got = losses.ppo_actor_loss(torch.tensor(adv), torch.tensor(ratio), eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ppo_actor_loss_gradient_vanishes_where_clipped():
    adv = torch.tensor([1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5], requires_grad=True)  # A>0 above 1+e, A<0 below 1-e: both clipped
    losses.ppo_actor_loss(adv, ratio, 0.2).backward()
    torch.testing.assert_close(ratio.grad, torch.zeros(2))


def test_clip_fraction_ignores_the_advantage_sign():
    ratio = torch.tensor([0.7, 0.8, 0.95, 1.0, 1.19, 1.21, 1.5, 2.0])
    # |r-1| > 0.2: 0.7, 1.21, 1.5, 2.0 (0.8 gives 0.2 up to float rounding: exactly as written in float32)
    expected = sum(abs(r - 1.0) > 0.2 for r in ratio.tolist()) / 8
    assert losses.clip_fraction(ratio, 0.2).item() == pytest.approx(expected)
    assert losses.clip_fraction(torch.tensor([0.5, 1.5, 1.0, 1.0]), 0.2).item() == pytest.approx(0.5)


# ---------------------------------------------------------------- 6. critic and other losses
def test_clipped_critic_loss_and_value_clip_frac_hand_worked():
    eps = 0.2
    v = [1.0, 0.0, 2.0, 0.5]
    v_old = [0.0, 0.0, 1.0, 0.4]
    r = [2.0, 1.0, 0.0, 0.45]
    expected, larger = 0.0, 0
    for vi, oi, ri in zip(v, v_old, r):
        vc = oi + min(max(vi - oi, -eps), eps)
        un, cl = (vi - ri) ** 2, (vc - ri) ** 2
        expected += max(un, cl)
        larger += cl > un
    # sample 0: V_c = 0.2, (0.2-2)^2 = 3.24 > 1; sample 2: V_c = 1.2, 1.44 < 4; sample 3: not clipped -> equal
    assert larger == 1
    loss, frac = losses.critic_loss(torch.tensor(v), torch.tensor(v_old), torch.tensor(r), eps, clip=True)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-6)
    assert frac.item() == pytest.approx(larger / 4)


def test_unclipped_critic_loss_is_the_mean_squared_error():
    v, r = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2.0, 1.0, 0.0])
    loss, frac = losses.critic_loss(v, torch.tensor([0.0, 0.0, 1.0]), r, 0.2, clip=False)
    assert loss.item() == pytest.approx((1 + 1 + 4) / 3)
    assert frac.item() == 0.0


def test_bounds_loss_hand_worked():
    mu = torch.tensor([[1.5, -2.0], [0.5, 0.0]])
    # sample 0: 0.5^2 + 1^2 = 1.25; sample 1: 0 -> mean 0.625, times 0.3
    assert losses.bounds_loss(mu, 0.3).item() == pytest.approx(0.1875)


def test_entropy_matches_torch_distributions():
    logstd = torch.tensor([[-2.9, 0.0, 0.4], [-1.0, 1.0, 2.0]])
    expected = Normal(torch.zeros_like(logstd), logstd.exp()).entropy().sum(-1)
    torch.testing.assert_close(losses.gaussian_entropy(logstd), expected)


def test_approx_kl_hand_computed():
    ratio = [0.5, 1.0, 2.0, 1.2]
    expected = sum(r - 1 - math.log(r + 1e-8) for r in ratio) / 4
    assert losses.approx_kl(torch.tensor(ratio)).item() == pytest.approx(expected, rel=1e-5)


def test_explained_variance():
    v, r = [1.0, 2.5, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]
    err = [vi - ri for vi, ri in zip(v, r)]
    expected = 1 - statistics.variance(err) / (statistics.variance(r) + 1e-8)
    assert losses.explained_variance(torch.tensor(v), torch.tensor(r)).item() == pytest.approx(expected, rel=1e-5)
    # returns that do not vary give 0, not a huge negative number
    assert losses.explained_variance(torch.tensor(v), torch.full((4,), 3.0)).item() == 0.0
    # a perfect critic gives 1
    assert losses.explained_variance(torch.tensor(r), torch.tensor(r)).item() == pytest.approx(1.0)


def test_gaussian_kl_same_std_matches_kl_divergence():
    g = torch.Generator().manual_seed(5)
    mu_new, mu_old = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    logstd = torch.tensor([-0.5, 0.2, -2.0])
    std = logstd.exp().expand_as(mu_new)
    expected = kl_divergence(Normal(mu_old, std), Normal(mu_new, std)).sum(-1).mean()
    torch.testing.assert_close(losses.gaussian_kl_same_std(mu_new, mu_old, logstd), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- 7. gradient inspection and clipping
class FlatNet:
    """A tiny two-layer network of the single agent (stacked layers, P = 1) whose trainable
    parameters are views of one FlatParameters buffer, with gradients in it, as the agent keeps them."""

    def __init__(self, scale: float = 1.0, seed: int = 0, frozen: tuple[str, ...] = ()):
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(StackedLinear(1, 4), torch.nn.Tanh(), StackedLinear(1, 2))
        x = torch.randn(1, 5, 3)
        self.net(x)  # materialise
        for n, p in self.net.named_parameters():
            p.requires_grad_(n not in frozen)
        self.flat = FlatParameters([(n, p) for n, p in self.net.named_parameters() if p.requires_grad], 1)
        with quiet_layout_warning():
            (self.net(x).square().sum() * scale).backward()

    def parameters(self):
        return self.net.parameters()

    def named_parameters(self):
        return self.net.named_parameters()


def net_with_grads(scale: float = 1.0, seed: int = 0, frozen: tuple[str, ...] = ()) -> FlatNet:
    return FlatNet(scale, seed, frozen)


def clip(net: FlatNet, clip_val: float, check_magnitude: bool, fail_on_bad: bool, name: str):
    """inspect_and_clip for member 0 of a population of one."""
    return inspect_and_clip(net.flat, torch.tensor([clip_val], dtype=torch.float64), check_magnitude=check_magnitude,
                            fail_on_bad=fail_on_bad, name=name, members=torch.tensor([True]))


def total_norm(net) -> float:
    return math.sqrt(sum(float(p.grad.double().square().sum()) for p in net.parameters() if p.grad is not None))


@pytest.mark.parametrize("clip_val", [0.05, 1000.0])
def test_clipping_matches_clip_grad_norm(clip_val):
    net = net_with_grads()
    ref = [torch.nn.Parameter(p.detach().clone()) for p in net.parameters()]
    for p, q in zip(net.parameters(), ref):
        q.grad = p.grad.clone()
    norm = total_norm(net)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, clip_val)
    step = clip(net, clip_val, check_magnitude=True, fail_on_bad=True, name="actor")
    assert step.bad.shape == (1,) and not step.bad.any()
    assert step.norm_before_clip.item() == pytest.approx(norm, rel=1e-5)
    assert ref_norm.item() == pytest.approx(norm, rel=1e-5)
    assert step.norm_after_clip.item() == pytest.approx(min(norm, clip_val), abs=1e-4)
    assert total_norm(net) == pytest.approx(min(norm, clip_val), abs=1e-4)
    for p, q in zip(net.parameters(), ref):
        torch.testing.assert_close(p.grad, q.grad)


def test_no_clipping_when_clip_val_is_zero():
    net = net_with_grads()
    before = [p.grad.clone() for p in net.parameters()]
    step = clip(net, 0.0, check_magnitude=False, fail_on_bad=True, name="critic")
    assert step.norm_after_clip.item() == pytest.approx(step.norm_before_clip.item())
    for p, g in zip(net.parameters(), before):
        assert torch.equal(p.grad, g)


def test_nan_grads_raise_naming_the_network_when_failing():
    net = net_with_grads()
    next(net.parameters()).grad[0, 0, 0] = float("nan")
    with pytest.raises(BadGradientError, match="critic"):
        clip(net, 1.0, check_magnitude=False, fail_on_bad=True, name="critic")
    assert issubclass(BadGradientError, ValueError)  # the reference raises ValueError


def test_nan_grads_are_bad_and_not_clipped_when_not_failing():
    net = net_with_grads()
    next(net.parameters()).grad[0, 0, 0] = float("nan")
    before = [p.grad.clone() for p in net.parameters()]
    step = clip(net, 1.0, check_magnitude=False, fail_on_bad=False, name="actor")
    assert bool(step.bad) and math.isnan(step.norm_before_clip.item())
    for p, g in zip(net.parameters(), before):  # not clipped: the gradients are as they were
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("check", [True, False])
def test_huge_norm_is_bad_only_with_check_grad_mag(check):
    net = net_with_grads(scale=1e8)
    assert total_norm(net) > 1e6
    step = clip(net, 0.0, check_magnitude=check, fail_on_bad=False, name="actor")
    assert bool(step.bad) is check
    if check:
        with pytest.raises(BadGradientError, match="actor"):
            clip(net, 0.0, check_magnitude=True, fail_on_bad=True, name="actor")


@pytest.mark.parametrize("check", [True, False])
def test_an_infinite_norm_is_bad_even_without_check_grad_mag(check):
    """Deliberate difference (README): ProtoMotions tests only isnan(norm) without check_grad_mag, so an
    infinite norm passes; Fabric's clipping then raises, or with no clipping Adam steps on inf
    gradients and the weights turn NaN. Here any non-finite norm is bad: skipped, or raised."""
    net = net_with_grads()
    next(net.parameters()).grad[0, 0, 0] = float("inf")
    assert total_norm(net) == math.inf  # inf, not nan: the reference's isnan test lets it through
    before = [p.grad.clone() for p in net.parameters()]
    step = clip(net, 1.0, check_magnitude=check, fail_on_bad=False, name="actor")
    assert bool(step.bad) and step.norm_before_clip.item() == math.inf
    for p, g in zip(net.parameters(), before):  # not clipped (a scale of 1 / inf would zero them)
        assert torch.equal(p.grad, g)
    with pytest.raises(BadGradientError, match="actor gradients are bad: norm=inf"):
        clip(net, 1.0, check_magnitude=check, fail_on_bad=True, name="actor")


@pytest.mark.parametrize("check", [True, False])
def test_per_layer_norms_only_with_check_grad_mag(check):
    net = net_with_grads()
    expected = {n: float(p.grad.norm()) for n, p in net.named_parameters()}
    step = clip(net, 0.01, check_magnitude=check, fail_on_bad=True, name="actor")
    if not check:
        assert step.layer_norms == {}
        return
    assert set(step.layer_norms) == set(expected)
    for n, v in expected.items():  # measured before clipping
        assert step.layer_norms[n].item() == pytest.approx(v, rel=1e-5)


def test_params_without_grad_are_left_out():
    # a frozen parameter (the agent's fixed logstd) is not in the flat buffer and has no gradient
    net = net_with_grads(frozen=("2.bias",))
    assert net.net[2].bias.grad is None and "2.bias" not in net.flat.names
    step = clip(net, 0.0, check_magnitude=True, fail_on_bad=True, name="actor")
    assert "2.bias" not in step.layer_norms
    assert step.norm_before_clip.item() == pytest.approx(total_norm(net), rel=1e-5)


def test_mlp_helper_builds():  # keeps the shared builder honest about its key layout
    cfg = mlp("value", 1)
    assert cfg.out_keys == ["value"] and cfg.models[0].num_out == 1
    assert isinstance(PPOActorConfig(mu_key="mu"), PPOActorConfig) and isinstance(PPOModelConfig(), PPOModelConfig)


# ---------------------------------------------------------------- observation normalisation inside MLPWithConcat
def test_obs_normaliser_uses_previous_moments_and_updates_in_train_mode_only():
    from workbench.agents.common.config import MLPLayerConfig, MLPWithConcatConfig
    from workbench.agents.common.modules import MLPWithConcat
    torch.manual_seed(0)
    net = MLPWithConcat(MLPWithConcatConfig(num_out=1, in_keys=["obs"], out_keys=["y"], normalize_obs=True,
                                            norm_ema_decay=None, norm_clamp_value=1.5,
                                            layers=[MLPLayerConfig(4, "identity")]))
    x0 = torch.tensor([[[1.0, -2.0], [3.0, 4.0]]])  # [P=1, B, D]
    net.eval()
    net(TensorDict({"obs": x0}, batch_size=[1, 2]))  # materialises; eval mode records nothing
    assert net.obs_norm.count.item() == 1.0 and net.obs_norm.mean.abs().sum().item() == 0.0
    net.train()
    x = torch.tensor([[[2.0, 0.0], [4.0, 10.0], [0.0, -1.0]]])
    y = net(TensorDict({"obs": x}, batch_size=[1, 3])).get("y")
    # the output used the moments BEFORE this batch: mean 0, var 1, clamp 1.5
    expected_in = (x / math.sqrt(1 + 1e-5)).clamp(-1.5, 1.5)
    torch.testing.assert_close(y, net.network(expected_in))
    # then the moments moved: pooled with the initial pseudo-sample (count 1, mean 0, var 1)
    xs = x[0].double()
    m = xs.sum(0) / 4
    var = (1.0 + m.square() + (xs - m).square().sum(0)) / 4
    torch.testing.assert_close(net.obs_norm.mean, m.unsqueeze(0))
    torch.testing.assert_close(net.obs_norm.var, var.unsqueeze(0))
    net.eval()
    net(TensorDict({"obs": x}, batch_size=[1, 3]))
    torch.testing.assert_close(net.obs_norm.mean, m.unsqueeze(0))  # frozen in eval mode


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_reward_norm_rollout_update_equals_step_by_step(ema_decay):
    """record_rollout (one update per rollout) gives the statistics and returns of per-step record_reward."""
    g = torch.Generator().manual_seed(3)
    rewards = (torch.randn(12, 5, generator=g) * 3 + 1).unsqueeze(0)  # [P=1, T, N]
    terminated = (torch.rand(12, 5, generator=g) < 0.2).unsqueeze(0)
    stepwise = RewardNormalizer(num_envs=5, gamma=0.97, ema_decay=ema_decay)
    batched = RewardNormalizer(num_envs=5, gamma=0.97, ema_decay=ema_decay)
    for t in range(12):
        stepwise.record_reward(rewards[:, t], terminated[:, t])
    batched.record_rollout(rewards, terminated)
    torch.testing.assert_close(batched.discounted_return, stepwise.discounted_return)
    torch.testing.assert_close(batched.mean, stepwise.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.var, stepwise.var, rtol=1e-12, atol=1e-12)
    assert batched.count.item() == stepwise.count.item()


def test_episode_accounting_matches_a_step_by_step_loop():
    from workbench.agents.common.episodes import account_episodes

    gen = torch.Generator().manual_seed(0)
    T, N = 40, 6
    rewards = torch.randn(T, N, generator=gen)
    dones = torch.rand(T, N, generator=gen) < 0.15
    dones[:, 0] = False  # an env with no episode end in the rollout
    dones[-1, 1] = True  # one that ends on the last step
    running_return = torch.randn(N, generator=gen)
    running_length = torch.randint(0, 50, (N,), generator=gen).float()

    ret, length = running_return.clone(), running_length.clone()
    count = total_return = total_length = 0.0
    for t in range(T):  # the reference: the loop the rollout used to run
        ret += rewards[t]
        length += 1
        for n in range(N):
            if dones[t, n]:
                count += 1
                total_return += ret[n].item()
                total_length += length[n].item()
                ret[n] = 0.0
                length[n] = 0.0

    finished = account_episodes(rewards, dones, running_return, running_length)
    assert finished.count.shape == finished.return_sum.shape == finished.length_sum.shape == (N,)  # per env
    assert finished.count.sum().item() == count
    assert finished.return_sum.sum().item() == pytest.approx(total_return, rel=1e-5)
    assert finished.length_sum.sum().item() == total_length
    assert torch.allclose(running_return, ret, atol=1e-5)
    assert torch.equal(running_length, length)


@pytest.mark.parametrize("members", [1, 3])
def test_packed_rollout_gathers_what_per_field_indexing_gives(members):
    from workbench.agents.common.minibatch import PackedRollout

    gen = torch.Generator().manual_seed(3)
    P, size = members, 50
    data = {"obs": torch.randn(P, size, 5, generator=gen), "pair": torch.randn(P, size, 2, 3, generator=gen),
            "neglogp": torch.randn(P, size, generator=gen), "dones": torch.rand(P, size, generator=gen) < 0.3,
            "value": torch.randn(P, size, 1, generator=gen), "steps": torch.arange(P * size).view(P, size),
            "wide": torch.randn(P, size, 2, generator=gen, dtype=torch.float64)}
    idx = torch.stack([torch.randperm(size, generator=gen)[:17] for _ in range(P)])  # each member its own rows
    got = PackedRollout(data).gather(idx)
    assert list(got) == list(data)
    for key, value in data.items():
        expected = torch.stack([value[p, idx[p]] for p in range(P)])
        assert got[key].dtype == value.dtype and torch.equal(got[key], expected), key


def test_mean_accumulator_averages_each_key_over_the_minibatches_that_had_it():
    from workbench.agents.common.metrics import MeanAccumulator

    acc = MeanAccumulator()
    acc.add({"a": torch.tensor(1.0), "b": 2.0, "c": torch.tensor([[4.0]], dtype=torch.float64)})
    acc.add({"a": torch.tensor(3.0), "b": torch.tensor(6.0), "flag": torch.tensor(True)})
    acc.add({"a": torch.tensor(5.0), "b": 1.0})
    means = acc.means()
    assert len(means) == 1  # one dict per member
    assert means[0] == pytest.approx({"a": 3.0, "b": 3.0, "c": 4.0, "flag": 1.0})
