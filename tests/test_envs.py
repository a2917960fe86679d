"""Torch-native envs (Pendulum, CartPole) and make_env, checked against independent computations."""
from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from workbench.envs import BatchedEnv, EnvConfigError, make_env
from workbench.envs.cartpole import CartPole
from workbench.envs.pendulum import Pendulum

CONF_ENV = Path(__file__).resolve().parents[1] / "conf" / "env"


def make_torch_env(kind: str, **kwargs) -> Pendulum | CartPole:
    return {"pendulum": Pendulum, "cartpole": CartPole}[kind](**kwargs)


# --- Pendulum against Gymnasium's own Pendulum-v1 -------------------------------------------------

def test_pendulum_matches_gymnasium_step_by_step():
    reference = gym.make("Pendulum-v1").unwrapped
    reference.reset(seed=0)
    env = Pendulum(num_envs=1)
    rng = np.random.default_rng(0)
    for _ in range(300):
        # Random states that cover wrap-around angles, the speed clip and torques past the limit.
        theta, theta_dot = rng.uniform(-3 * math.pi, 3 * math.pi), rng.uniform(-9.0, 9.0)
        action = rng.uniform(-1.5, 1.5)
        reference.state = np.array([theta, theta_dot])
        ref_obs, ref_reward, *_ = reference.step(np.array([action * 2.0]))
        env.theta[:] = theta
        env.theta_dot[:] = theta_dot
        result = env.step(torch.tensor([[action]], dtype=torch.float32))
        np.testing.assert_allclose(result.obs["obs"][0].numpy(), ref_obs, atol=1e-5)
        np.testing.assert_allclose(result.reward.item(), ref_reward, atol=1e-5, rtol=1e-6)


# --- Reset semantics shared by the torch-native envs ----------------------------------------------

@pytest.mark.parametrize("kind", ["pendulum", "cartpole"])
def test_reset_none_empty_and_ids(kind):
    env = make_torch_env(kind, num_envs=6, seed=3)
    assert isinstance(env, BatchedEnv)
    for _ in range(4):
        env.step(torch.full((6, 1), 0.7))
    stepped = env.get_obs()["obs"].clone()
    assert stepped.shape == (6, env.obs_dim)

    obs = env.reset(torch.tensor([], dtype=torch.long))
    assert torch.equal(obs["obs"], stepped), "reset(empty) must reset nothing and return all obs"
    assert (env.progress == 4).all()

    obs = env.reset(torch.tensor([1, 4]))
    changed = (obs["obs"] != stepped).any(dim=-1)
    assert changed.tolist() == [False, True, False, False, True, False]
    assert env.progress.tolist() == [4, 0, 4, 4, 0, 4]

    obs = env.reset(None)
    assert (obs["obs"] != stepped).any(dim=-1).all()
    assert (env.progress == 0).all()


@pytest.mark.parametrize("kind", ["pendulum", "cartpole"])
def test_step_returns_pre_reset_obs_on_truncation(kind):
    env = make_torch_env(kind, num_envs=3, max_episode_length=3, seed=1)
    zero = torch.zeros(3, 1)
    for _ in range(2):
        assert not env.step(zero).dones.any()
    result = env.step(zero)
    assert result.truncated.all() and not result.terminated.any()
    assert torch.equal(result.extras["terminate"], torch.zeros(3))
    # The returned obs is the state reached by the step, and nothing was reset behind our back.
    assert (env.progress == 3).all()
    assert torch.equal(result.obs["obs"], env.get_obs()["obs"])
    assert torch.allclose(result.obs["obs"][:, -1], env.theta_dot)
    # The agent's reset(done_ids) is what starts the new episodes.
    obs = env.reset(result.dones.nonzero().squeeze(-1))
    assert (env.progress == 0).all()
    assert not torch.equal(obs["obs"], result.obs["obs"])


# --- CartPole ------------------------------------------------------------------------------------

def lagrangian_accelerations(env: CartPole, theta: float, theta_dot: float, force: float):
    """Solve the cart + uniform-rod equations of motion (derived from the Lagrangian) as a 2x2 system."""
    m, big_m, l, g = env.pole_mass, env.cart_mass, env.pole_half_length, env.gravity
    mass_matrix = np.array([[big_m + m, m * l * math.cos(theta)],
                            [m * l * math.cos(theta), 4.0 / 3.0 * m * l * l]])
    rhs = np.array([force + m * l * math.sin(theta) * theta_dot**2, m * g * l * math.sin(theta)])
    return np.linalg.solve(mass_matrix, rhs)


def test_cartpole_accelerations_match_lagrangian_mechanics():
    env = CartPole(num_envs=1, pole_mass=0.3, cart_mass=0.8, pole_length=1.4)
    rng = np.random.default_rng(0)
    for _ in range(50):
        theta, theta_dot, force = rng.uniform(-4, 4), rng.uniform(-10, 10), rng.uniform(-10, 10)
        x_acc, theta_acc = env.accelerations(torch.tensor([theta], dtype=torch.float64),
                                             torch.tensor([theta_dot], dtype=torch.float64),
                                             torch.tensor([force], dtype=torch.float64))
        np.testing.assert_allclose([x_acc.item(), theta_acc.item()],
                                   lagrangian_accelerations(env, theta, theta_dot, force), rtol=1e-9)


def test_cartpole_starts_hanging_down_near_centre():
    obs = CartPole(num_envs=64, seed=0).get_obs()["obs"]
    x, cos, sin, x_dot, theta_dot = obs.unbind(-1)
    assert (cos < -0.99).all() and (x.abs() < 0.1).all() and (theta_dot.abs() < 0.1).all()
    assert x.std() > 0, "reset noise must differ between envs"


def test_cartpole_reward_hand_worked_values():
    env = CartPole(num_envs=4)
    env.x[:] = torch.tensor([0.0, 0.0, 2.0, 0.0])
    env.theta[:] = torch.tensor([0.0, math.pi, 0.0, math.pi / 2])
    env.theta_dot[:] = torch.tensor([0.0, 0.0, 0.0, 5.0])
    control = torch.tensor([0.0, 0.0, 1.0, 0.0])
    # upright-centred-still: 1; hanging: 0; at x=2 (centring margin) with full control:
    # centred (1 + 0.1)/2, small_control 4/5; horizontal pole at speed 5: upright 1/2, velocity (1+0.1)/2.
    expected = torch.tensor([1.0, 0.0, 0.55 * 0.8, 0.5 * 0.55])
    assert torch.allclose(env.reward(control), expected, atol=1e-6)


def test_cartpole_out_of_bounds_is_terminated_not_truncated():
    env = CartPole(num_envs=3, max_episode_length=10)
    env.x[:] = torch.tensor([2.39, -2.39, 0.0])
    env.x_dot[:] = torch.tensor([5.0, -5.0, 0.0])
    env.progress[:] = 9  # the last step of the episode: termination must still win
    result = env.step(torch.zeros(3, 1))
    assert result.terminated.tolist() == [True, True, False]
    assert result.truncated.tolist() == [False, False, True]
    assert result.extras["terminate"].tolist() == [1.0, 1.0, 0.0]
    assert result.extras["termination/out_of_bounds"].tolist() == [1.0, 1.0, 0.0]
    assert result.extras["terminate"].dtype == torch.float32
    # Post-step, pre-reset: the obs shows the cart past the track end.
    assert (result.obs["obs"][:2, 0].abs() > env.track_limit).all()


def test_cartpole_time_limit_is_truncated_not_terminated():
    env = CartPole(num_envs=2, max_episode_length=5)
    env.x.zero_(); env.x_dot.zero_(); env.theta.zero_(); env.theta_dot.zero_()  # balanced: stays put
    for t in range(1, 6):
        result = env.step(torch.zeros(2, 1))
        assert not result.terminated.any()
        assert result.truncated.tolist() == [t == 5] * 2
    assert torch.allclose(result.reward, torch.ones(2))


def rollout(env: CartPole, steps: int, action_seed: int) -> list[torch.Tensor]:
    """Random actions with lazy resets as the agent does them; returns obs, rewards and dones."""
    actions = torch.Generator().manual_seed(action_seed)
    trace, done_ids = [], None
    for _ in range(steps):
        obs = env.reset(done_ids)
        result = env.step(torch.randn(env.num_envs, 1, generator=actions) * 2)
        trace += [obs["obs"], result.reward, result.dones]
        done_ids = result.dones.nonzero().squeeze(-1)
    return trace


def test_cartpole_same_seed_same_trajectories_and_other_seed_differs():
    first = rollout(CartPole(num_envs=8, max_episode_length=20, seed=5), 60, action_seed=0)
    second = rollout(CartPole(num_envs=8, max_episode_length=20, seed=5), 60, action_seed=0)
    other = rollout(CartPole(num_envs=8, max_episode_length=20, seed=6), 60, action_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


def test_cartpole_state_dict_round_trip_reproduces_next_steps():
    env = CartPole(num_envs=8, max_episode_length=15, seed=2)
    rollout(env, 23, action_seed=1)  # mid-episode, with resets behind us
    state = env.state_dict()
    expected = rollout(env, 40, action_seed=2)  # crosses episode ends, so the generator is used

    restored = CartPole(num_envs=8, max_episode_length=15, seed=99)
    restored.load_state_dict(state)
    replay = rollout(restored, 40, action_seed=2)
    assert all(torch.equal(a, b) for a, b in zip(expected, replay))
    # The saved state is a snapshot, not a view of the live tensors.
    env.load_state_dict(state)
    assert torch.equal(rollout(env, 40, action_seed=2)[0], expected[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cartpole_runs_on_gpu_like_on_cpu():
    cpu = CartPole(num_envs=4, seed=0)
    gpu = CartPole(num_envs=4, seed=0, device="cuda")
    gpu.load_state_dict({k: v for k, v in cpu.state_dict().items() if k != "generator"} | {
        "generator": gpu.generator.get_state()})
    action = torch.full((4, 1), 0.3)
    a, b = cpu.step(action), gpu.step(action.cuda())
    assert b.obs["obs"].device.type == "cuda"
    assert torch.allclose(a.obs["obs"], b.obs["obs"].cpu(), atol=1e-5)


def test_cartpole_reference_controller_beats_random_policy():
    # The documented returns: a good policy is clearly separated from a random one.
    from bench.cartpole_reference import SwingUpController, episode_returns, random_policy
    env = CartPole(num_envs=16, seed=0)
    random_returns, _ = episode_returns(env, random_policy)
    good_returns, good_lengths = episode_returns(env, SwingUpController(env))
    assert random_returns.mean() < 30
    assert good_returns.mean() > 380 and (good_lengths == 500).all()


# --- make_env ------------------------------------------------------------------------------------

def test_make_env_builds_with_device_and_seed_from_caller():
    cfg = OmegaConf.create({"_target_": "workbench.envs.cartpole.CartPole", "num_envs": 3, "max_episode_length": 7})
    env = make_env(cfg, device="cpu", seed=4)
    assert isinstance(env, CartPole) and env.num_envs == 3 and env.max_episode_length == 7
    assert torch.equal(env.get_obs()["obs"], CartPole(num_envs=3, seed=4).get_obs()["obs"])


def test_make_env_unknown_key_names_it_and_lists_allowed_keys():
    with pytest.raises(EnvConfigError) as error:
        make_env({"_target_": "workbench.envs.pendulum.Pendulum", "num_env": 4}, device="cpu", seed=0)
    message = str(error.value)
    assert "'num_env'" in message
    for allowed in ("num_envs", "max_episode_length", "dt"):
        assert allowed in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("target", ["workbench.envs.nowhere.Nothing", "workbench.envs.pendulum.Pendulumm", "Pendulum"])
def test_make_env_unknown_target_is_named(target):
    with pytest.raises(EnvConfigError, match=target.replace(".", r"\.")):
        make_env({"_target_": target}, device="cpu", seed=0)


@pytest.mark.parametrize("num_envs", [0, -2])
def test_make_env_rejects_non_positive_num_envs(num_envs):
    with pytest.raises(EnvConfigError, match=f"env.num_envs={num_envs} is not allowed: must be >= 1"):
        make_env({"_target_": "workbench.envs.pendulum.Pendulum", "num_envs": num_envs}, device="cpu", seed=0)


def test_make_env_refuses_device_and_seed_in_config():
    with pytest.raises(EnvConfigError, match="'seed'"):
        make_env({"_target_": "workbench.envs.pendulum.Pendulum", "seed": 1}, device="cpu", seed=0)


@pytest.mark.parametrize("name", ["pendulum", "cartpole", "halfcheetah", "hopper", "walker2d", "ant", "gym_pendulum"])
def test_every_env_config_builds(name):
    cfg = OmegaConf.load(CONF_ENV / f"{name}.yaml")
    cfg.num_envs = 2
    env = make_env(cfg, device="cpu", seed=0)
    try:
        result = env.step(torch.zeros(2, env.action_dim))
        assert result.obs["obs"].shape[0] == 2 and result.reward.dtype == torch.float32
    finally:
        env.close()


def test_first_episode_returns_sums_rewards_of_one_episode_per_env():
    from bench.random_returns import first_episode_returns
    returns, lengths = first_episode_returns(Pendulum(num_envs=2, max_episode_length=3, seed=1), seed=5)
    # Replay by hand: the same initial states and the same uniform actions.
    env, actions = Pendulum(num_envs=2, max_episode_length=3, seed=1), torch.Generator().manual_seed(5)
    env.reset()
    expected = sum(env.step(torch.rand(2, 1, generator=actions) * 2 - 1).reward for _ in range(3))
    assert lengths.tolist() == [3, 3]
    assert torch.allclose(returns, expected)
