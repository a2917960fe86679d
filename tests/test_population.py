"""Population training: P members as one batched agent, each following its own single run.

The independent reference for member p is the single run with member p's seed and
hyperparameters, built and trained on its own (a population of one, its own env).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent_factory import agent_config
from workbench.agents.common.checkpoint import load_checked
from workbench.agents.ppo.agent import PPO
from workbench.agents.ppo.config import AdvantageNormalizationConfig
from workbench.agents.ppo.population import PopulationConfigError
from workbench.envs.pendulum import Pendulum

REL_TOL = 1e-5
N = 16  # envs per member


def single_run(config, seed: int, iterations: int) -> PPO:
    agent = PPO(config, Pendulum(N, seed=seed), seed=seed)
    for _ in range(iterations):
        agent.train_iteration()
    return agent


def population(configs, seeds, output_dirs=None) -> PPO:
    return PPO(configs, Pendulum(N, member_seeds=seeds), seed=seeds, output_dirs=output_dirs)


def worst_relative_difference(single: PPO, pop: PPO, member: int) -> float:
    pop_state = pop.model.state_dict()
    worst = 0.0
    for key, value in single.model.state_dict().items():
        a, b = value[0].double(), pop_state[key][member].double()
        worst = max(worst, ((a - b).norm() / (a.norm() + 1e-30)).item())
    return worst


def test_members_with_different_knobs_follow_their_single_runs_while_skips_fire_in_some():
    seeds = [3, 5, 7, 11]
    configs = [
        agent_config(normalize_obs=True, e_clip=0.2, gradient_clip_val=0.5),
        # a clip fraction above a tiny threshold: the clip-fraction skip fires after the first update
        agent_config(normalize_obs=True, e_clip=0.001, actor_clip_frac_threshold=0.01),
        # raw advantages scaled by 1e9: actor gradient norms above 1e6, so the bad-gradient skip fires
        agent_config(normalize_obs=True, task_reward_w=1e9, actor_logstd=0.5,
                     adv_norm=AdvantageNormalizationConfig(enabled=False)),
        agent_config(normalize_obs=True, tau=0.8, gamma=0.9, actor_lr=3e-3, critic_lr=5e-4),
    ]
    pop = population(configs, seeds)
    history = [pop.train_iteration() for _ in range(3)]
    skipped = [sum(h[p]["actor/update_skipped"] for h in history) for p in range(4)]
    bad = [sum(h[p].get("actor/bad_grads_count", 0.0) for h in history) for p in range(4)]
    assert skipped[1] > 0 and skipped[0] == skipped[2] == skipped[3] == 0, skipped
    assert bad[2] > 0 and bad[0] == bad[1] == bad[3] == 0, bad
    for p, (seed, config) in enumerate(zip(seeds, configs)):
        single = single_run(config, seed, 3)
        assert worst_relative_difference(single, pop, p) <= REL_TOL, p


def test_a_member_is_independent_of_the_others():
    """Member 0's parameters are the same whoever trains beside it."""
    config = agent_config(normalize_obs=True)
    alone = population([config], [4])
    crowd = population([config, agent_config(normalize_obs=True, e_clip=0.05),
                        agent_config(normalize_obs=True, tau=0.5)], [4, 8, 9])
    for _ in range(2):
        alone.train_iteration()
        crowd.train_iteration()
    assert worst_relative_difference(alone, crowd, 0) <= REL_TOL


def test_members_that_differ_on_a_structural_field_are_refused_naming_it():
    with pytest.raises(PopulationConfigError, match=r"num_steps.*member 0: 4.*member 1: 8"):
        population([agent_config(), agent_config(num_steps=8)], [0, 1])


def test_members_whose_networks_differ_are_refused_naming_the_leaf():
    """A network given as a mapping (any module config, as from a YAML file) is compared key by key,
    keys only one member has included."""
    from workbench.agents.ppo.population import check_population

    def with_critic(critic):
        config = agent_config()
        config.model.critic = critic
        return config

    mlp = {"_target_": "protomotions.agents.common.mlp.MLPWithConcat", "in_keys": ["obs"], "out_keys": ["value"],
           "num_out": 1, "layers": [{"units": 8, "activation": "tanh"}]}
    check_population([with_critic(mlp), with_critic(dict(mlp))])
    with pytest.raises(PopulationConfigError, match=r"agent.model.critic.layers, but they differ \(member 0: .*'units': 8.*member 1: .*'units': 9"):
        check_population([with_critic(mlp), with_critic({**mlp, "layers": [{"units": 9, "activation": "tanh"}]})])
    with pytest.raises(PopulationConfigError, match=r"agent.model.critic.normalize_obs, but they differ \(member 0: None, member 1: True"):
        check_population([with_critic(mlp), with_critic({**mlp, "normalize_obs": True})])


def test_removed_member_stops_and_inserted_member_starts_like_a_fresh_run():
    seeds = [2, 6]
    config = agent_config(normalize_obs=True)
    pop = population([config, config], seeds)
    for _ in range(2):
        pop.train_iteration()
    pop.remove_member(1)
    frozen = {k: v[1].clone() for k, v in pop.model.state_dict().items()}
    logs = pop.train_iteration()
    assert logs[1] is None
    assert all(torch.equal(frozen[k], v[1]) for k, v in pop.model.state_dict().items())

    newcomer = agent_config(normalize_obs=True, e_clip=0.1, actor_lr=2e-3)
    pop.insert_member(1, newcomer, seed=9)
    for _ in range(3):
        pop.train_iteration()
    assert pop.epochs == [6, 3]
    assert worst_relative_difference(single_run(newcomer, 9, 3), pop, 1) <= REL_TOL
    assert worst_relative_difference(single_run(config, 2, 6), pop, 0) <= REL_TOL


def test_population_resumes_exactly_from_its_member_checkpoints(tmp_path):
    seeds = [1, 2]
    configs = [agent_config(normalize_obs=True), agent_config(normalize_obs=True, e_clip=0.1)]
    straight = population(configs, seeds)
    for _ in range(4):
        straight.train_iteration()

    dirs = [tmp_path / "member_0", tmp_path / "member_1"]
    first = population(configs, seeds, dirs)
    for _ in range(2):
        first.train_iteration()
    first.save_checkpoint("last.ckpt")
    resumed = population(configs, seeds, dirs)
    for p, d in enumerate(dirs):
        resumed.load_checkpoint(d / "last.ckpt", member=p)
    for _ in range(2):
        resumed.train_iteration()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.epochs == [4, 4]


def test_a_member_checkpoint_is_a_single_run_checkpoint(tmp_path):
    seeds = [1, 2]
    config = agent_config(normalize_obs=True)
    dirs = [tmp_path / "member_0", tmp_path / "member_1"]
    pop = population([config, config], seeds, dirs)
    for _ in range(2):
        pop.train_iteration()
    pop.save_checkpoint("last.ckpt")
    state = load_checked(dirs[1] / "last.ckpt")
    weight = state["model"]["_actor.mu.models.0.network.0.weight"]
    assert weight.shape == (8, 3)  # the single-agent layout: no member dimension
    assert set(state["actor_optimizer"]) == {"state", "param_groups"}

    single = PPO(config, Pendulum(N, seed=2), seed=2)
    single.load_checkpoint(dirs[1] / "last.ckpt")
    assert single.epoch == 2
    single.train_iteration()
    pop.train_iteration()
    assert worst_relative_difference(single, pop, 1) <= REL_TOL


@pytest.mark.slow
def test_workbench_train_population_seeds_writes_a_run_per_member(tmp_path):
    from workbench.tracking import read_run

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "workbench.cli", "train", "population.seeds=[0,1,2,3]",
           "agent.training_max_iterations=3", "env.num_envs=64", "agent.batch_size=512",
           "agent.evaluator.max_eval_steps=20", f"hydra.run.dir={run_dir}", "torch_threads=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    for i in range(4):
        member_dir = run_dir / f"member_{i}"
        run = read_run(member_dir)
        assert run.config["seed"] == i and run.config["population"]["member"] == i
        assert run.group == run.config["population"]["name"]
        history = run.history
        assert len(history) == 3
        for key in ("actor/grad_norm_before_clip", "critic/grad_norm_before_clip", "actor/clip_frac",
                    "critic/value_clip_frac"):
            assert history[key].notna().all(), key
        state = load_checked(member_dir / "last.ckpt")
        assert state["epoch"] == 3


def test_bad_population_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "workbench.cli", "train", "population.members=[{agent.num_steps: 8},{}]",
           "agent.training_max_iterations=1", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_steps" in lines[0], done.stderr
    assert not any(run_dir.glob("member_*"))


@pytest.mark.slow
def test_a_population_of_8_learns_like_8_single_runs():
    """The pendulum, 8 seeds: as a population and as 8 single runs. Members start as their single
    runs and drift apart chaotically, so the check is statistical: both sets learned, and their
    final evaluation returns are indistinguishable (two-sided Mann-Whitney U)."""
    from scipy.stats import mannwhitneyu

    from conftest import compose_config
    from workbench.train import build_agent, build_population
    from workbench.train_population import member_configs

    budget = ["logger.mode=disabled", "env.num_envs=64", "agent.batch_size=512", "agent.training_max_steps=200000",
              "agent.evaluator.eval_metrics_every=1000", "torch_threads=1"]
    seeds = list(range(8))
    cfg = compose_config(budget + [f"population.seeds={seeds}"])
    population_returns = [m["eval/episode_reward"] for m in build_population(member_configs(cfg), [None] * 8).fit()]
    single_returns = [build_agent(compose_config(budget + [f"seed={s}"]), None).fit()[0]["eval/episode_reward"]
                      for s in seeds]
    assert min(population_returns) > -600 and min(single_returns) > -600  # random: about -1200
    assert mannwhitneyu(population_returns, single_returns).pvalue > 0.01, (population_returns, single_returns)


def count_sub_env_steps(env) -> list[int]:
    """Count each gymnasium sub-env's steps from now on (the list fills in as they run)."""
    counts = [0] * env.num_envs
    for i, sub_env in enumerate(env.envs.envs):
        def counted(action, i=i, step=sub_env.step):
            counts[i] += 1
            return step(action)
        sub_env.step = counted
    return counts


def test_only_the_members_evaluated_or_training_step_their_gymnasium_envs():
    """An evaluation of some members steps only their eval envs and gives what evaluating
    everyone gives them; an empty slot's training envs stand still while the others go on
    exactly as their single runs."""
    from workbench.agents.base.config import EvaluatorConfig
    from workbench.envs.gym_adapter import GymVectorEnv

    seeds, n, eval_steps = [1, 2, 3], 2, 15
    config = agent_config(normalize_obs=True, evaluator=EvaluatorConfig(eval_metrics_every=None, max_eval_steps=eval_steps))

    def envs(member_seeds):
        return GymVectorEnv("Pendulum-v1", num_envs=n, member_seeds=member_seeds)

    pop = PPO([config] * 3, envs(seeds), seed=seeds, eval_env=envs([s + 100 for s in seeds]))
    pop.train_iteration()
    everyone = pop.evaluate()
    eval_steps_taken = count_sub_env_steps(pop.evaluator.env)
    one = pop.evaluate([1])
    assert list(one) == [1] and one[1] == everyone[1]
    assert eval_steps_taken == [0, 0] + [eval_steps] * n + [0, 0]

    pop.remove_member(2)
    train_steps_taken = count_sub_env_steps(pop.env)
    pop.train_iteration()
    assert train_steps_taken == [config.num_steps] * (2 * n) + [0, 0]
    single = PPO(config, GymVectorEnv("Pendulum-v1", num_envs=n, seed=seeds[0]), seed=seeds[0])
    for _ in range(2):
        single.train_iteration()
    assert worst_relative_difference(single, pop, 0) <= REL_TOL
