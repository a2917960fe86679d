"""Populations: member i of a P-member env is bit-identical to the single env built with seed s_i.

Checked for the native populations (Pendulum, CartPole, GymVectorEnv) and for the generic
PopulationEnv wrapper around a small env of the tests' own, step by step under the same
actions, across lazy resets of ended envs and forced resets mid-episode; then the per-member
state (checkpoint, load into a single env, reset_member) and make_env's checks.
"""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from workbench.envs import EnvConfigError, PopulationEnv, StepResult, as_env_ids, make_env
from workbench.envs.cartpole import CartPole
from workbench.envs.gym_adapter import GymVectorEnv
from workbench.envs.pendulum import Pendulum

SEEDS = [3, 5, 9]


class NoisyWalkEnv:
    """A seeded random walk without population support: reset draws the start, |x| > 1 terminates."""

    def __init__(self, num_envs: int = 4, max_episode_length: int = 6, device: str | torch.device = "cpu",
                 seed: int = 0):
        self.num_envs, self.action_dim, self.dt = num_envs, 1, 0.1
        self.device = torch.device(device)
        self.max_episode_length = max_episode_length
        self.generator = torch.Generator().manual_seed(seed)
        self.x = torch.zeros(num_envs)
        self.progress = torch.zeros(num_envs, dtype=torch.long)
        self.reset()

    def reset(self, env_ids=None) -> TensorDict:
        ids = as_env_ids(env_ids, self.num_envs, self.device)
        self.x[ids] = torch.rand(ids.numel(), generator=self.generator) - 0.5
        self.progress[ids] = 0
        return self.get_obs()

    def get_obs(self) -> TensorDict:
        return TensorDict({"obs": torch.stack((self.x, self.progress.float()), -1)}, batch_size=[self.num_envs])

    def step(self, action: torch.Tensor) -> StepResult:
        self.x = self.x + 0.4 * action[:, 0].clamp(-1, 1)
        self.progress += 1
        terminated = self.x.abs() > 1
        truncated = (self.progress >= self.max_episode_length) & ~terminated
        return StepResult(self.get_obs(), -self.x.abs(), terminated, truncated, {"terminate": terminated.float()})

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "progress": self.progress.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.x.copy_(state["x"])
        self.progress.copy_(state["progress"])
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        pass


# name -> (env config, the class make_env must return, steps to run in lockstep)
CASES = {
    "pendulum": ({"_target_": "workbench.envs.pendulum.Pendulum", "num_envs": 4, "max_episode_length": 7}, Pendulum, 30),
    "cartpole": ({"_target_": "workbench.envs.cartpole.CartPole", "num_envs": 4, "max_episode_length": 9}, CartPole, 30),
    "gym_pendulum": ({"_target_": "workbench.envs.gym_adapter.GymVectorEnv", "gym_id": "Pendulum-v1", "num_envs": 2,
                      "max_episode_length": 7}, GymVectorEnv, 25),
    "halfcheetah": ({"_target_": "workbench.envs.gym_adapter.GymVectorEnv", "gym_id": "HalfCheetah-v5", "num_envs": 2,
                     "max_episode_length": 5}, GymVectorEnv, 12),
    "wrapper": ({"_target_": f"{__name__}.NoisyWalkEnv", "num_envs": 4}, PopulationEnv, 30),
}


def build(name: str, seeds: list[int]):
    cfg = CASES[name][0]
    return make_env(cfg, device="cpu", seed=1000, member_seeds=seeds), [make_env(cfg, device="cpu", seed=s) for s in seeds]


def member_ids(ids: torch.Tensor, member: int, n: int) -> torch.Tensor:
    """The ids of ``member``'s envs among population ``ids``, local to its single env, in order."""
    return ids[torch.div(ids, n, rounding_mode="floor") == member] - member * n


def assert_same(a, b):
    """Deep, exact equality of env outputs and states (tensors inside nested containers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def cat_results(results: list[StepResult]) -> dict:
    return {"obs": torch.cat([r.obs["obs"] for r in results]), "reward": torch.cat([r.reward for r in results]),
            "terminated": torch.cat([r.terminated for r in results]),
            "truncated": torch.cat([r.truncated for r in results]),
            "extras": {k: torch.cat([r.extras[k] for r in results]) for k in results[0].extras}}


def as_dict(result: StepResult) -> dict:
    return {"obs": result.obs["obs"], "reward": result.reward, "terminated": result.terminated,
            "truncated": result.truncated, "extras": result.extras}


def lockstep(pop, singles, steps: int, action_seed: int = 0, forced: dict[int, list[int]] | None = None) -> int:
    """Drive ``pop`` and ``singles`` with the same actions and resets; assert every output equal.

    Done envs are reset lazily (as the agent does); ``forced[t]`` lists population ids reset at
    step t whatever their state (mid-episode, across members, unsorted). Returns the number of
    episode ends seen.
    """
    n, forced, ends = singles[0].num_envs, forced or {}, 0
    actions = torch.Generator().manual_seed(action_seed)
    done = torch.zeros(pop.num_envs, dtype=torch.bool)
    for t in range(steps):
        for ids in (done.nonzero().squeeze(-1), torch.tensor(forced.get(t, []), dtype=torch.long)):
            obs = pop.reset(ids)
            expected = [env.reset(member_ids(ids, i, n)) for i, env in enumerate(singles)]
            assert torch.equal(obs["obs"], torch.cat([o["obs"] for o in expected])), f"reset at step {t}"
        action = torch.randn(pop.num_envs, pop.action_dim, generator=actions) * 1.5
        result = pop.step(action)
        assert_same(as_dict(result), cat_results([env.step(part) for env, part in zip(singles, action.split(n))]))
        done = result.dones
        ends += int(done.sum())
    return ends


@pytest.fixture(params=list(CASES))
def case(request):
    return request.param


def close_all(*envs):
    for env in envs:
        env.close()


def test_member_equals_single_env_with_its_seed(case):
    pop, singles = build(case, SEEDS)
    try:
        n = singles[0].num_envs
        assert isinstance(pop, CASES[case][1])
        assert (pop.num_envs, pop.num_members, pop.member_num_envs) == (3 * n, 3, n)
        assert pop.max_episode_length == singles[0].max_episode_length
        ends = lockstep(pop, singles, CASES[case][2], forced={2: [n + 1, 0, 2 * n]})
        assert ends > 0, "the run must cross episode ends"
        # members differ from each other: the seeds matter
        assert not torch.equal(pop.get_obs()["obs"][:n], pop.get_obs()["obs"][n:2 * n])
    finally:
        close_all(pop, *singles)


def test_single_env_exposes_one_member(case):
    pop, (single,) = build(case, [4])
    try:
        assert getattr(single, "num_members", 1) == 1
        assert getattr(single, "member_num_envs", single.num_envs) == single.num_envs
        if case != "wrapper":  # native classes expose both attributes on a single env
            assert (single.num_members, single.member_num_envs) == (1, single.num_envs)
        # a one-member population is the single env, state format included
        assert_same(pop.state_dict(), single.state_dict())
        lockstep(pop, [single], 8)
    finally:
        close_all(pop, single)


def test_member_state_dict_loads_into_a_single_env(case):
    pop, singles = build(case, SEEDS)
    other, _ = build(case, [21, 22, 23])
    fresh = make_env(CASES[case][0], device="cpu", seed=77)
    try:
        lockstep(pop, singles, 6, forced={1: [1]})
        state = pop.member_state_dict(1)
        assert_same(state, singles[1].state_dict())
        fresh.load_state_dict(state)
        assert_same(fresh.state_dict(), state)

        untouched = [other.member_state_dict(i) for i in (0, 2)]
        other.max_episode_length = 4
        other.load_member_state_dict(1, state)
        assert other.max_episode_length == 4, "one member's state must not set the shared limit"
        other.max_episode_length = pop.max_episode_length
        assert_same(other.member_state_dict(1), state)
        assert_same([other.member_state_dict(i) for i in (0, 2)], untouched)

        # the loaded single env runs on as member 1 would; restart every episode first, as the
        # agent does after a resume (gym envs restore the RNGs, not the simulator state)
        fresh.reset()
        singles[1].reset()
        lockstep(fresh, [singles[1]], 6, action_seed=3)
    finally:
        close_all(pop, other, fresh, *singles)


def test_whole_population_state_round_trips(case):
    pop, singles = build(case, SEEDS)
    other, _ = build(case, [21, 22, 23])
    try:
        lockstep(pop, singles, 5)
        state = pop.state_dict()
        assert len(state["members"]) == 3
        other.load_state_dict(state)
        assert_same(other.state_dict(), state)
        pop.reset()
        other.reset()
        lockstep(other, [pop], 6, action_seed=4)  # the whole population as the reference
    finally:
        close_all(pop, other, *singles)


def test_reset_member_matches_fresh_env_and_leaves_others(case):
    pop, singles = build(case, SEEDS)
    fresh = make_env(CASES[case][0], device="cpu", seed=42)
    try:
        n = fresh.num_envs
        lockstep(pop, singles, 4)
        before_obs = pop.get_obs()["obs"].clone()
        before = [pop.member_state_dict(i) for i in (0, 2)]
        pop.reset_member(1, 42)
        obs = pop.get_obs()["obs"]
        assert torch.equal(obs[:n], before_obs[:n]) and torch.equal(obs[2 * n:], before_obs[2 * n:])
        assert_same([pop.member_state_dict(i) for i in (0, 2)], before)
        assert torch.equal(obs[n:2 * n], fresh.get_obs()["obs"])
        assert_same(pop.member_state_dict(1), fresh.state_dict())
        lockstep(pop, [singles[0], fresh, singles[2]], 8, action_seed=5)
    finally:
        close_all(pop, fresh, *singles)


def test_max_episode_length_is_shared(case):
    pop, singles = build(case, SEEDS)
    try:
        pop.max_episode_length = 3
        for env in singles:
            env.max_episode_length = 3
        lockstep(pop, singles, 7)
    finally:
        close_all(pop, *singles)


@pytest.mark.parametrize("seeds", [[], "12", [1.5], [True, 2], (1, "a"), 7])
def test_make_env_rejects_bad_member_seeds(seeds):
    with pytest.raises(EnvConfigError, match="member_seeds must be a non-empty list of ints"):
        make_env({"_target_": "workbench.envs.pendulum.Pendulum", "num_envs": 2}, device="cpu", seed=0,
                 member_seeds=seeds)


def test_make_env_refuses_member_seeds_in_config():
    with pytest.raises(EnvConfigError, match="'member_seeds' is set by the agent"):
        make_env({"_target_": "workbench.envs.pendulum.Pendulum", "member_seeds": [1, 2]}, device="cpu", seed=0)


def test_member_index_out_of_range_is_refused():
    pop = make_env({"_target_": "workbench.envs.pendulum.Pendulum", "num_envs": 2}, device="cpu", seed=0,
                   member_seeds=[1, 2])
    with pytest.raises(IndexError, match="member 2 out of range for 2 members"):
        pop.member_state_dict(2)
    with pytest.raises(ValueError, match="holds 3 members"):
        pop.load_state_dict({"members": [pop.member_state_dict(0)] * 3})


@pytest.mark.parametrize("case", ["gym_pendulum", "halfcheetah", "wrapper", "pendulum"])
def test_a_skipped_member_is_left_alone_and_goes_on_as_if_paused(case):
    """skip_members: the others step exactly as their single envs; a member skipped for a while
    (in envs that step members one by one) is not stepped, reports reward 0 and no episode
    end, and then goes on as its single env would had it been paused. A batched torch env may
    step it anyway (one op either way): there only the others are checked."""
    pop, singles = build(case, SEEDS)
    n, steps = singles[0].num_envs, CASES[case][2]
    really_skips = isinstance(pop, (GymVectorEnv, PopulationEnv))
    actions = torch.Generator().manual_seed(4)
    done = torch.zeros(pop.num_envs, dtype=torch.bool)
    skipped_steps = 0
    for t in range(steps):
        skipping = 3 <= t < 8
        pop.skip_members([False, skipping, False])
        ids = done.nonzero().squeeze(-1)
        obs = pop.reset(ids)
        for i, env in enumerate(singles):
            expected = env.reset(member_ids(ids, i, n))
            if really_skips or i != 1:
                assert torch.equal(obs["obs"][i * n:(i + 1) * n], expected["obs"]), (t, i)
        action = torch.randn(pop.num_envs, pop.action_dim, generator=actions) * 1.5
        result = pop.step(action)
        for i, (env, part) in enumerate(zip(singles, action.split(n))):
            rows = slice(i * n, (i + 1) * n)
            if i == 1 and skipping:
                if really_skips:
                    assert torch.equal(result.obs["obs"][rows], env.get_obs()["obs"]), t
                    assert not result.reward[rows].any() and not result.dones[rows].any(), t
                    skipped_steps += 1
                continue
            expected = as_dict(env.step(part))
            if really_skips or i != 1:
                got = {k: v[rows] if torch.is_tensor(v) else {e: x[rows] for e, x in v.items()}
                       for k, v in as_dict(result).items()}
                assert_same(got, expected)
        done = result.dones
    assert skipped_steps == (5 if really_skips else 0)
    with pytest.raises(ValueError, match="skip mask has 2 entries for 3 members"):
        pop.skip_members([True, False])
    close_all(pop, *singles)
