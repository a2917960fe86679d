"""ProtoMotions agent configs port unchanged (issue 13, item 2).

tests/protomotions/agent/ holds agent configs written the way ProtoMotions' experiment files
build them, with ProtoMotions' ``_target_`` paths: ``mimic_mlp`` (examples/experiments/mimic/
mlp.py's agent_config, MLPs straight in mu_model and critic) and ``mimic_tokens`` (the same
networks as a ModuleContainer of an ObsProcessor with module operations and a per-frame MLP, as
ProtoMotions' token encoders are built). They are selected like any agent file (``agent=<name>``
with the folder on Hydra's search path) and must train exactly as the equivalent workbench
config does: the same metrics and the same weights, number for number.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_config
from workbench.agents.targets import WORKBENCH_FOR_PROTOMOTIONS, accepted_targets, canonical_target
from workbench.config import ConfigError, validate
from workbench.train import build_agent, run_training

torch.set_num_threads(1)

PORTED = Path(__file__).resolve().parent / "protomotions"
SEARCH = f"hydra.searchpath=[file://{PORTED}]"
# the workbench's own agent (conf/agent/ppo.yaml) with mimic_mlp.yaml's values
WORKBENCH_EQUIVALENT = [
    "agent.gradient_clip_val=50",
    "agent.model.actor.mu_model.models.0.layers=[{units:32,activation:relu},{units:32,activation:relu}]",
    "+agent.model.actor.mu_model.models.0.output_activation=tanh",
    "agent.model.critic.models.0.layers=[{units:32,activation:relu},{units:32,activation:relu}]",
]


def config(*overrides: str):
    # ~tuning: the per-env tuning file would merge into the workbench agent's networks
    return compose_config(TINY + [SEARCH, "~tuning", "logger.mode=disabled", *overrides])


def train(agent, iterations: int = 3) -> list[dict[str, float]]:
    rows = []
    for _ in range(iterations):
        row, = agent.train_iteration()
        rows.append({k: v for k, v in row.items() if not k.startswith(("times/", "info/sps", "grad_layers/"))})
    return rows


def parameters(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.model.parameters()]


@pytest.fixture(scope="module")
def workbench_run():
    agent = build_agent(config(*WORKBENCH_EQUIVALENT), None)
    return train(agent), parameters(agent)


@pytest.mark.parametrize("name", ["mimic_mlp", "mimic_tokens"])
def test_a_protomotions_agent_config_trains_like_the_workbench_one(name, workbench_run):
    cfg = config(f"agent={name}")
    assert cfg.agent._target_ == "protomotions.agents.ppo.agent.PPO"  # kept as written
    agent = build_agent(cfg, None)
    rows, params = train(agent), parameters(agent)
    expected_rows, expected_params = workbench_run
    assert rows == expected_rows
    assert len(params) == len(expected_params)
    for got, want in zip(params, expected_params):
        assert torch.equal(got, want)


def test_the_ported_config_runs_through_workbench_train(tmp_path):
    """The whole run: config check, build, training, evaluation, checkpoints."""
    result = run_training(config("agent=mimic_tokens"), tmp_path)
    assert len(result.history) == 8 and result.final_eval_return is not None
    assert (tmp_path / "last.ckpt").exists()
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["model"]
    assert "_actor.mu.models.0.obs_norm.mean" in state  # the ObsProcessor's normaliser (per frame)
    assert state["_actor.mu.models.0.obs_norm.mean"].shape == (3,)


def test_every_table_entry_names_a_workbench_class():
    import importlib
    for protomotions, workbench in WORKBENCH_FOR_PROTOMOTIONS.items():
        assert protomotions.startswith("protomotions.") and workbench.startswith("workbench.")
        module, _, name = workbench.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type)
        assert canonical_target(protomotions) == workbench == canonical_target(workbench)
        assert protomotions in accepted_targets(workbench)


@pytest.mark.parametrize("override, message", [
    ("agent._target_=protomotions.agents.amp.agent.AMP",
     "agent._target_='protomotions.agents.amp.agent.AMP' is not allowed: must be one of "
     "workbench.agents.ppo.agent.PPO, protomotions.agents.ppo.agent.PPO"),
    ("agent.model._target_=protomotions.agents.ase.model.ASEModel", "must be one of workbench.agents.ppo.model.PPOModel"),
    ("agent.model.actor._target_=PPOActor", "protomotions.agents.ppo.model.PPOActor"),
    ("agent.evaluator._target_=protomotions.agents.evaluators.mimic_evaluator.MimicEvaluator",
     "protomotions.agents.evaluators.base_evaluator.BaseEvaluator"),
    ("agent.model.critic._target_=protomotions.agents.common.transformer.Transformer",
     "agent.model.critic._target_='protomotions.agents.common.transformer.Transformer' is not allowed: a module: one of"),
    ("agent.model.actor.mu_model.layers.0.units=0", "agent.model.actor.mu_model.layers.0.units=0 is not allowed"),
    ("agent.model.actor.mu_key=mu", "agent.model.actor.mu_model.out_keys=['actor_trunk_out'] is not allowed: "
                                    "the network must write 'mu'"),
])
def test_what_does_not_port_is_refused_naming_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        validate(config("agent=mimic_mlp", override))
    assert message in str(err.value)
