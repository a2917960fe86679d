"""GymVectorEnv against Gymnasium's own single envs: lazy resets, end-of-episode flags, actions, seeding."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from workbench.envs import BatchedEnv
from workbench.envs.gym_adapter import GymVectorEnv


class ActionEchoEnv(gym.Env):
    """Observes the last action it received, so tests see exactly what reached the env."""

    def __init__(self):
        self.action_space = gym.spaces.Box(low=np.array([0.0, -3.0, -np.inf], dtype=np.float32),
                                           high=np.array([1.0, 5.0, np.inf], dtype=np.float32))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.asarray(action, dtype=np.float32), 0.0, False, False, {}


gym.register("WorkbenchTest/ActionEcho-v0", entry_point=ActionEchoEnv, max_episode_steps=50)


@pytest.fixture
def cheetah():
    env = GymVectorEnv("HalfCheetah-v5", num_envs=2, seed=7)
    yield env
    env.close()


def test_halfcheetah_matches_single_gymnasium_envs(cheetah):
    assert isinstance(cheetah, BatchedEnv)
    assert cheetah.action_dim == 6 and cheetah.dt == pytest.approx(0.05) and cheetah.max_episode_length == 1000
    references = [gym.make("HalfCheetah-v5") for _ in range(2)]
    ref_obs = [ref.reset(seed=7 + i)[0] for i, ref in enumerate(references)]
    obs = cheetah.get_obs()
    assert obs["obs"].dtype == torch.float32 and obs["obs"].shape == (2, 17)
    np.testing.assert_allclose(obs["obs"].numpy(), np.stack(ref_obs), atol=1e-6)

    actions = torch.Generator().manual_seed(0)
    for _ in range(5):
        action = torch.rand(2, 6, generator=actions) * 2 - 1  # HalfCheetah's Box is [-1, 1]: no rescale
        result = cheetah.step(action)
        for i, ref in enumerate(references):
            ref_obs, ref_reward, *_ = ref.step(action[i].numpy().astype(np.float64))
            np.testing.assert_allclose(result.obs["obs"][i].numpy(), ref_obs, atol=1e-5)
            assert result.reward[i].item() == pytest.approx(ref_reward, abs=1e-5)
        assert result.reward.dtype == torch.float32


def test_lazy_reset_keeps_final_obs_until_reset_ids(cheetah):
    cheetah.max_episode_length = 3  # the curriculum may shorten episodes at any time
    zero = torch.zeros(2, 6)
    assert not cheetah.step(zero).dones.any()
    assert not cheetah.step(zero).dones.any()
    result = cheetah.step(zero)
    assert result.truncated.all() and not result.terminated.any()
    final = result.obs["obs"].clone()
    assert torch.equal(cheetah.get_obs()["obs"], final), "the done step must not reset"
    assert torch.equal(cheetah.reset(torch.tensor([], dtype=torch.long))["obs"], final)

    obs = cheetah.reset(torch.tensor([1]))["obs"]
    assert torch.equal(obs[0], final[0]), "env 0 was not asked to reset"
    assert not torch.equal(obs[1], final[1])
    assert cheetah.progress.tolist() == [3, 0]
    # A reset draws a fresh start near HalfCheetah's initial pose (noise scale 0.1).
    assert obs[1].abs().max() < 0.5


def test_hopper_falling_is_terminated_with_final_obs():
    env = GymVectorEnv("Hopper-v5", num_envs=2, seed=0)
    actions = torch.Generator().manual_seed(0)
    try:
        for _ in range(1000):
            result = env.step(torch.randn(2, 3, generator=actions) * 2)
            if result.dones.any():
                break
        assert result.terminated.any(), "a random Hopper falls long before the 1000-step limit"
        assert not (result.terminated & result.truncated).any()
        assert torch.equal(result.extras["terminate"], result.terminated.float())
        ended = result.terminated.nonzero().squeeze(-1)
        # The obs returned on the done step is the unhealthy final state, not a fresh reset:
        # Hopper is healthy only with height > 0.7, |angle| < 0.2 and |state| < 100.
        height, angle = result.obs["obs"][ended, 0], result.obs["obs"][ended, 1]
        unhealthy = (height <= 0.7) | (angle.abs() >= 0.2) | (result.obs["obs"][ended, 1:].abs() >= 100).any(-1)
        assert unhealthy.all()
        obs = env.reset(ended)["obs"]
        assert (obs[ended, 0] > 1.2).all(), "a reset Hopper stands at about 1.25"
    finally:
        env.close()


def run_hopper_until_done(max_episode_length: int | None = None):
    env = GymVectorEnv("Hopper-v5", num_envs=2, seed=0, max_episode_length=max_episode_length)
    actions = torch.Generator().manual_seed(0)
    try:
        for step in range(1, 1001):
            result = env.step(torch.randn(2, 3, generator=actions) * 2)
            if result.dones.any():
                return step, result
    finally:
        env.close()
    raise AssertionError("no episode ended")


def test_hopper_small_max_episode_length_truncates_and_termination_wins_ties():
    fall_step, fallen = run_hopper_until_done()
    assert fallen.terminated.any()
    step, result = run_hopper_until_done(max_episode_length=fall_step - 1)
    assert step == fall_step - 1 and result.truncated.all() and not result.terminated.any()
    # Both ends on the same step: a terminal state must not be bootstrapped as a truncation.
    step, result = run_hopper_until_done(max_episode_length=fall_step)
    assert step == fall_step
    assert torch.equal(result.terminated, fallen.terminated)
    assert torch.equal(result.truncated, ~fallen.terminated)


def test_pendulum_gym_time_limit_is_truncation_and_no_autoreset():
    env = GymVectorEnv("Pendulum-v1", num_envs=2, seed=0)
    assert env.max_episode_length == 200 and env.dt == pytest.approx(0.05)
    env.max_episode_length = 10_000  # leave the cut to gymnasium's TimeLimit (the spec's 200 steps)
    zero = torch.zeros(2, 1)
    try:
        for _ in range(199):
            assert not env.step(zero).dones.any()
        result = env.step(zero)
        assert result.truncated.all() and not result.terminated.any()
        # Autoreset is disabled: stepping an ended env that nobody reset is refused.
        with pytest.raises(RuntimeError, match=r"sub-envs \[0, 1\] that ended"):
            env.step(zero)
        env.reset(torch.tensor([0, 1]))
        assert not env.step(zero).dones.any()
    finally:
        env.close()


def test_actions_clip_then_map_onto_box_bounds():
    env = GymVectorEnv("WorkbenchTest/ActionEcho-v0", num_envs=3, seed=0)
    action = torch.tensor([[-1.0, -1.0, 0.3],
                           [0.5, 0.0, -7.0],
                           [4.0, 2.0, 7.0]])
    # low + (clip(a) + 1)/2 * (high - low) on bounded dims; the unbounded dim is only clipped.
    expected = torch.tensor([[0.0, -3.0, 0.3],
                             [0.75, 1.0, -1.0],
                             [1.0, 5.0, 1.0]])
    try:
        assert torch.allclose(env.step(action).obs["obs"], expected)
    finally:
        env.close()


def test_pendulum_action_scaling_matches_gymnasium_torque():
    env = GymVectorEnv("Pendulum-v1", num_envs=1, seed=3)
    reference = gym.make("Pendulum-v1")
    reference.reset(seed=3)
    try:
        for policy_action, torque in ((0.5, 1.0), (-3.0, -2.0), (0.1, 0.2)):
            ref_obs, ref_reward, *_ = reference.step(np.array([torque], dtype=np.float32))
            result = env.step(torch.tensor([[policy_action]]))
            np.testing.assert_allclose(result.obs["obs"][0].numpy(), ref_obs, atol=1e-6)
            assert result.reward.item() == pytest.approx(ref_reward, abs=1e-5)
    finally:
        env.close()


def test_seeding_and_rng_state_round_trip():
    first, second, other = (GymVectorEnv("Pendulum-v1", num_envs=3, seed=s) for s in (11, 11, 12))
    try:
        assert torch.equal(first.get_obs()["obs"], second.get_obs()["obs"])
        assert not torch.equal(first.get_obs()["obs"], other.get_obs()["obs"])
        first.step(torch.zeros(3, 1))
        state = first.state_dict()
        expected = [first.reset()["obs"].clone(), first.reset(torch.tensor([2]))["obs"].clone()]

        other.load_state_dict(state)  # another seed, but the saved RNG streams take over
        assert torch.equal(other.progress, torch.ones(3, dtype=torch.long))
        replay = [other.reset()["obs"], other.reset(torch.tensor([2]))["obs"]]
        assert all(torch.equal(a, b) for a, b in zip(expected, replay))
    finally:
        for env in (first, second, other):
            env.close()


def test_async_mode_resets_only_listed_envs():
    env = GymVectorEnv("Pendulum-v1", num_envs=2, seed=0, vectorization_mode="async")
    try:
        before = env.step(torch.zeros(2, 1)).obs["obs"].clone()
        after = env.reset(torch.tensor([0]))["obs"]
        assert not torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    finally:
        env.close()


def test_unsupported_vectorization_mode_is_refused():
    with pytest.raises(ValueError, match="vectorization_mode"):
        GymVectorEnv("Pendulum-v1", num_envs=1, vectorization_mode="threads")


@pytest.mark.parametrize("gym_id, kwargs", [
    ("HalfCheetah-v5", {}),
    ("HalfCheetah-v5", {"forward_reward_weight": 2.0, "ctrl_cost_weight": 0.5,
                        "exclude_current_positions_from_observation": False}),
    ("Hopper-v5", {}),
    ("Hopper-v5", {"healthy_reward": -1.0, "healthy_state_range": (-5.0, 5.0), "healthy_z_range": (0.9, 2.0)}),
    ("Walker2d-v5", {}),
    ("Walker2d-v5", {"terminate_when_unhealthy": False, "healthy_angle_range": (-0.5, 0.5)}),
])
def test_the_batched_mujoco_step_is_gymnasiums_step_bit_for_bit(gym_id, kwargs):
    """Every obs, reward and end flag of the kernel-stepped adapter equals gymnasium's own env's, over
    episodes ended by falls and by the 1000-step TimeLimit, resets drawn from each env's RNG."""
    n, steps = 3, 1100
    env = GymVectorEnv(gym_id, num_envs=n, seed=3, env_kwargs=kwargs)
    references = [gym.make(gym_id, **kwargs) for _ in range(n)]
    try:
        assert env._kernel is not None, f"{gym_id} should be stepped by its kernel"
        ref_obs = np.stack([ref.reset(seed=3 + i)[0] for i, ref in enumerate(references)]).astype(np.float32)
        assert np.array_equal(env.get_obs()["obs"].numpy(), ref_obs)
        actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, n, env.action_dim)).astype(np.float32)
        ends = {"terminated": 0, "truncated": 0}
        for t in range(steps):
            result = env.step(torch.from_numpy(actions[t]))
            for i, ref in enumerate(references):
                obs, reward, terminated, truncated, _ = ref.step(actions[t, i])
                assert np.array_equal(result.obs["obs"][i].numpy(), np.asarray(obs, dtype=np.float32)), (t, i)
                assert result.reward[i].item() == np.float32(reward), (t, i)
                assert bool(result.terminated[i]) == terminated and bool(result.truncated[i]) == truncated, (t, i)
                ends["terminated"] += terminated
                ends["truncated"] += truncated
                if terminated or truncated:
                    ref.reset()
            env.reset(result.dones.nonzero().squeeze(-1))
        fall = kwargs.get("terminate_when_unhealthy", True) and gym_id != "HalfCheetah-v5"
        assert ends["terminated" if fall else "truncated"] > 0, ends  # both kinds of end were crossed
    finally:
        env.close()
        for ref in references:
            ref.close()


def test_envs_without_a_batched_step_are_stepped_by_gymnasium():
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.wrappers import ClipReward, TimeLimit

    from workbench.envs.mujoco_kernels import ForwardKernel, kernel_for

    class FasterCheetah(HalfCheetahEnv):  # a subclass may change step(): gymnasium steps it
        pass

    ant, pendulum = GymVectorEnv("Ant-v5", num_envs=1), GymVectorEnv("Pendulum-v1", num_envs=1)
    cases = {"plain": [TimeLimit(HalfCheetahEnv(), 1000)], "bare": [HalfCheetahEnv()],
             "rendering": [TimeLimit(HalfCheetahEnv(render_mode="rgb_array"), 1000)],
             "wrapped": [TimeLimit(ClipReward(HalfCheetahEnv(), -1.0, 1.0), 1000)],
             "subclass": [TimeLimit(FasterCheetah(), 1000)],
             "mixed limits": [TimeLimit(HalfCheetahEnv(), 1000), TimeLimit(HalfCheetahEnv(), 500)],
             "mixed kwargs": [TimeLimit(HalfCheetahEnv(), 1000), TimeLimit(HalfCheetahEnv(ctrl_cost_weight=0.5), 1000)]}
    try:
        assert ant._kernel is None and pendulum._kernel is None
        kernel, limit = kernel_for(cases["plain"])
        assert isinstance(kernel, ForwardKernel) and limit == 1000
        assert kernel_for(cases["bare"])[1] == float("inf")
        for name in ("rendering", "wrapped", "subclass", "mixed limits", "mixed kwargs"):
            assert kernel_for(cases[name]) is None, name
    finally:
        for env in (ant, pendulum, *(e for envs in cases.values() for e in envs)):
            env.close()
