"""The configuration surface: every field and default of ProtoMotions' agent dataclasses (NVlabs/ProtoMotions
at 607ca7a), written out in the tables below ("the spec").

A user who knows ProtoMotions must find every knob where they expect it, with the same
default. The expected tables are copied from the reference's dataclasses, not from the code.
"""
from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from omegaconf import MISSING, OmegaConf

from workbench.agents.base.config import BaseAgentConfig, EvaluatorConfig, MaxEpisodeLengthManagerConfig
from workbench.agents.common import modules
from workbench.agents.common.config import (BaseModelConfig, MLPLayerConfig, MLPWithConcatConfig,
                                            ModuleContainerConfig, ModuleOperationForwardConfig,
                                            NormObsBaseConfig, ObsProcessorConfig,
                                            OptimizerConfig)
from workbench.agents.ppo.config import (AdaptiveLRConfig, AdvantageNormalizationConfig, L2C2Config, PPOActorConfig,
                                         PPOAgentConfig, PPOModelConfig)

REQUIRED = object()  # the spec's "required"
ANY = object()  # a field the spec names without fixing a value (a _target_ path)


def field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = REQUIRED
    return out


def check_table(cls, table: dict, extra_allowed: tuple[str, ...] = ()):
    """Every field of the spec's table exists with its default, in the spec's order; no unexpected field."""
    got = field_defaults(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert set(names) - set(table) <= set(extra_allowed), f"{cls.__name__} has fields the spec lacks"
    assert [n for n in names if n in table] == list(table), f"{cls.__name__}: field order differs from the spec"
    for name, expected in table.items():
        value = got[name]
        if expected is REQUIRED:
            assert value is REQUIRED or value == MISSING, f"{cls.__name__}.{name} must be required"
            assert OmegaConf.is_missing(OmegaConf.structured(cls), name)
        elif expected is ANY:
            continue
        else:
            assert type(value) is type(expected) or (isinstance(expected, float) and isinstance(value, float)), \
                f"{cls.__name__}.{name}: {value!r} is not a {type(expected).__name__}"
            assert value == expected, f"{cls.__name__}.{name} defaults to {value!r}, the spec says {expected!r}"


def resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------- BaseAgentConfig
BASE_AGENT = {
    "batch_size": REQUIRED,
    "training_max_steps": REQUIRED,
    "training_max_iterations": None,
    "_target_": ANY,
    "model": BaseModelConfig(),
    "num_steps": 32,
    "gradient_clip_val": 0.0,
    "fail_on_bad_grads": False,
    "check_grad_mag": True,
    "gamma": 0.99,
    "bounds_loss_coef": 0.0,
    "task_reward_w": 1.0,
    "num_mini_epochs": 1,
    "training_early_termination": None,
    "save_epoch_checkpoint_every": 1000,
    "save_last_checkpoint_every": 10,
    "save_inference_checkpoint": False,
    "max_episode_length_manager": None,
    "evaluator": EvaluatorConfig(),
    "normalize_rewards": True,
    "normalized_reward_clamp_value": 5.0,
    "reward_norm_ema_decay": None,
}


def test_base_agent_config():
    check_table(BaseAgentConfig, BASE_AGENT)
    assert BaseAgentConfig._target_.endswith("BaseAgent")


# ---------------------------------------------------------------- PPOAgentConfig
PPO_AGENT = {
    **{k: v for k, v in BASE_AGENT.items() if k not in ("_target_", "model")},
    "_target_": ANY,
    "model": PPOModelConfig(),
    "tau": 0.95,
    "e_clip": 0.2,
    "clip_critic_loss": True,
    "actor_clip_frac_threshold": 0.6,
    "entropy_coef": 0.005,
    "l2c2": L2C2Config(enabled=False, lambda_l2c2=0.1, obs_pairs={}),
    "adaptive_lr": AdaptiveLRConfig(enabled=False, desired_kl=0.01, min_lr=1e-5, max_lr=1e-2),
    "advantage_normalization": AdvantageNormalizationConfig(),
}


def test_ppo_agent_config():
    got = field_defaults(PPOAgentConfig)
    assert set(got) == set(PPO_AGENT)
    for name, expected in PPO_AGENT.items():
        if expected is REQUIRED:
            assert OmegaConf.is_missing(OmegaConf.structured(PPOAgentConfig), name)
        elif expected is not ANY:
            assert got[name] == expected, name
    from workbench.agents.ppo.agent import PPO
    assert resolve(PPOAgentConfig._target_) is PPO
    assert issubclass(PPOAgentConfig, BaseAgentConfig)


def test_l2c2_and_adaptive_lr_configs():
    check_table(L2C2Config, {"enabled": False, "lambda_l2c2": 0.1, "obs_pairs": {}})
    check_table(AdaptiveLRConfig, {"enabled": False, "desired_kl": 0.01, "min_lr": 1e-5, "max_lr": 1e-2})


def test_ppo_agent_config_is_a_hydra_structured_config():
    cfg = OmegaConf.structured(PPOAgentConfig)
    assert OmegaConf.is_missing(cfg, "batch_size") and OmegaConf.is_missing(cfg, "training_max_steps")
    assert OmegaConf.is_missing(cfg.model.actor, "mu_key")
    assert cfg.actor_clip_frac_threshold == 0.6 and cfg.model.actor_optimizer.lr == 2e-5
    cfg.actor_clip_frac_threshold = None  # Optional: None disables the skip
    cfg.training_max_iterations = 3


# ---------------------------------------------------------------- optimizers and the base model
def test_optimizer_config():
    check_table(OptimizerConfig, {"_target_": "torch.optim.Adam", "lr": 1e-4, "weight_decay": 0.0, "eps": 1e-8,
                                  "betas": (0.9, 0.999)})
    assert resolve(OptimizerConfig._target_) is torch.optim.Adam


def test_l2c2_needs_a_pair_for_an_actor_input():
    from conftest import compose_config
    from workbench.config import ConfigError, validate
    base = ["agent.l2c2.enabled=true", "agent.batch_size=256", "agent.training_max_steps=8192", "env.num_envs=64"]
    validate(compose_config(base + ["+agent.l2c2.obs_pairs.obs=obs"]))
    with pytest.raises(ConfigError, match=r"agent.l2c2.obs_pairs=\{'noisy_obs': 'obs'\} is not allowed: .*"
                                          r"actor input \(agent.model.actor.in_keys: obs\)"):
        validate(compose_config(base + ["+agent.l2c2.obs_pairs.noisy_obs=obs"]))


def test_muon_is_not_offered():
    """MuonWithAuxAdam was removed (README, differences table): no config class names it, and the
    optimizer check refuses its ProtoMotions path naming what is allowed."""
    import workbench.agents.common.config as common_config
    from workbench.config import RANGE_CHECKS
    assert not hasattr(common_config, "MuonWithAuxAdamConfig")
    checks = {key: (ok, allowed) for key, ok, allowed in RANGE_CHECKS}
    for key in ("agent.model.actor_optimizer._target_", "agent.model.critic_optimizer._target_"):
        ok, allowed = checks[key]
        assert not ok("protomotions.agents.optimizer.muon.MuonWithAuxAdam")
        assert ok("torch.optim.Adam") and ok("torch.optim.AdamW")
        assert allowed == "must be one of torch.optim.Adam, torch.optim.AdamW"


def test_base_model_config():
    check_table(BaseModelConfig, {"_target_": ANY, "in_keys": [], "out_keys": []})


# ---------------------------------------------------------------- PPO model configs
def test_ppo_actor_config():
    check_table(PPOActorConfig, {"mu_key": REQUIRED, "in_keys": [], "out_keys": ["action", "mean_action", "neglogp"],
                                 "_target_": ANY, "mu_model": ModuleContainerConfig(), "num_out": None,
                                 "actor_logstd": -2.9, "learnable_std": False})
    from workbench.agents.ppo.model import PPOActor
    assert resolve(PPOActorConfig._target_) is PPOActor


def test_ppo_model_config():
    check_table(PPOModelConfig, {"_target_": ANY, "in_keys": [], "out_keys": ["action", "mean_action", "neglogp", "value"],
                                 "actor": PPOActorConfig(), "critic": ModuleContainerConfig(),
                                 "actor_optimizer": OptimizerConfig(lr=2e-5),
                                 "critic_optimizer": OptimizerConfig(lr=1e-4)})
    assert issubclass(PPOModelConfig, BaseModelConfig)
    model = PPOModelConfig()
    # only the learning rates differ from the optimizer defaults
    for opt, lr in ((model.actor_optimizer, 2e-5), (model.critic_optimizer, 1e-4)):
        assert (opt._target_, opt.lr, opt.weight_decay, opt.eps, tuple(opt.betas)) == \
            ("torch.optim.Adam", lr, 0.0, 1e-8, (0.9, 0.999))
    from workbench.agents.ppo.model import PPOModel
    assert resolve(PPOModelConfig._target_) is PPOModel


def test_advantage_normalization_config():
    check_table(AdvantageNormalizationConfig, {"enabled": True, "shift_mean": True, "use_ema": True,
                                               "ema_alpha": 0.05, "min_std": 0.02, "clamp_range": 4.0})


def test_defaults_are_not_shared_between_instances():
    a, b = PPOAgentConfig(batch_size=1, training_max_steps=1), PPOAgentConfig(batch_size=1, training_max_steps=1)
    a.model.out_keys.append("extra")
    a.model.actor.in_keys.append("obs")
    assert b.model.out_keys == ["action", "mean_action", "neglogp", "value"] and b.model.actor.in_keys == []


# ---------------------------------------------------------------- module configs
def test_norm_obs_base_config():
    check_table(NormObsBaseConfig, {"normalize_obs": False, "norm_clamp_value": 5.0, "norm_ema_decay": 0.999})


def test_mlp_layer_config():
    check_table(MLPLayerConfig, {"units": 512, "activation": "relu", "use_layer_norm": False})
    assert MLPLayerConfig(64, "tanh") == MLPLayerConfig(units=64, activation="tanh")  # positional, as in the seed


def test_mlp_with_concat_config():
    got = field_defaults(MLPWithConcatConfig)
    assert issubclass(MLPWithConcatConfig, NormObsBaseConfig)
    assert OmegaConf.is_missing(OmegaConf.structured(MLPWithConcatConfig), "num_out")
    assert got["layers"] == [] and got["in_keys"] == [] and got["out_keys"] == []
    assert got["output_activation"] is None
    assert got["module_operations"] == [ModuleOperationForwardConfig()]
    assert (got["normalize_obs"], got["norm_clamp_value"], got["norm_ema_decay"]) == (False, 5.0, 0.999)
    assert resolve(got["_target_"]) is modules.MLPWithConcat


def test_module_container_and_obs_processor_configs():
    check_table(ModuleContainerConfig, {"models": [], "_target_": ANY, "in_keys": [], "out_keys": []})
    assert resolve(ModuleContainerConfig._target_) is modules.ModuleContainer
    assert issubclass(ObsProcessorConfig, NormObsBaseConfig)
    assert resolve(ObsProcessorConfig._target_) is modules.ObsProcessor
    # ProtoMotions: an ObsProcessor does nothing but concatenate unless given operations
    assert ObsProcessorConfig().module_operations == [] and ObsProcessorConfig().out_keys == []


# ---------------------------------------------------------------- evaluator and episode-length manager
def test_evaluator_config():
    # num_envs is a workbench addition (the evaluator runs on an env of its own)
    check_table(EvaluatorConfig, {"_target_": ANY, "evaluation_components": {}, "max_eval_steps": 600,
                                  "eval_metrics_every": 200}, extra_allowed=("num_envs",))
    assert EvaluatorConfig().num_envs is None


def test_max_episode_length_manager_config():
    check_table(MaxEpisodeLengthManagerConfig, {"start_length": 5, "end_length": 300, "transition_epochs": 100000})


# ---------------------------------------------------------------- building modules from mappings
MLP = "workbench.agents.common.modules.MLPWithConcat"


def mlp_spec(**extra) -> dict:
    return {"_target_": MLP, "num_out": 2, "in_keys": ["obs"], "out_keys": ["mu"],
            "layers": [{"units": 4, "activation": "tanh"}], **extra}


PROTOMOTIONS_MODULES = {  # ProtoMotions' _target_ paths (agents/common/config.py) and the workbench class
    "protomotions.agents.common.mlp.MLPWithConcat": MLPWithConcatConfig,
    "protomotions.agents.common.common.ModuleContainer": ModuleContainerConfig,
    "protomotions.agents.common.common.ObsProcessor": ObsProcessorConfig,
}


def test_to_config_builds_the_named_dataclass():
    cfg = modules.to_config(mlp_spec())
    assert isinstance(cfg, MLPWithConcatConfig) and cfg.layers == [MLPLayerConfig(4, "tanh")]
    # ProtoMotions' own target paths are accepted and mapped to the workbench class
    cfg = modules.to_config(mlp_spec(_target_="protomotions.agents.common.mlp.MLPWithConcat"))
    assert cfg._target_ == MLP
    container = modules.to_config({
        "_target_": "protomotions.agents.common.common.ModuleContainer", "in_keys": ["obs"], "out_keys": ["mu"],
        "models": [{"_target_": "protomotions.agents.common.common.ObsProcessor", "in_keys": ["obs"],
                    "out_keys": ["obs_seq"], "module_operations": [
                        {"_target_": "protomotions.agents.common.config.ModuleOperationReshapeConfig",
                         "new_shape": ["batch_size", 1, -1]},
                        {"_target_": "protomotions.agents.common.config.ModuleOperationForwardConfig"}]},
                   mlp_spec(in_keys=["obs_seq"])]})
    assert container._target_ == "workbench.agents.common.modules.ModuleContainer"
    processor = container.models[0]
    assert isinstance(processor, ObsProcessorConfig) and processor._target_.endswith("modules.ObsProcessor")
    assert [type(op).__name__ for op in processor.module_operations] == ["ModuleOperationReshapeConfig",
                                                                         "ModuleOperationForwardConfig"]
    assert processor.module_operations[0].new_shape == ["batch_size", 1, -1]
    assert [op._target_ for op in processor.module_operations] == ["workbench.agents.common.modules.Reshape",
                                                                   "workbench.agents.common.modules.Forward"]


@pytest.mark.parametrize("target, cls", list(PROTOMOTIONS_MODULES.items()))
def test_every_protomotions_module_target_names_the_workbench_class(target, cls):
    from workbench.agents.targets import canonical_target
    assert resolve(canonical_target(target)) is resolve(cls._target_)


def test_to_config_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="unitz") as err:
        modules.to_config(mlp_spec(unitz=3, normalise_obs=True))
    assert "normalise_obs" in str(err.value)
    container = {"_target_": "workbench.agents.common.modules.ModuleContainer", "in_keys": ["obs"],
                 "out_keys": ["mu"], "models": [mlp_spec(bogus_key=1)]}
    with pytest.raises(ValueError, match="bogus_key") as err:
        modules.to_config(container, "agent.model.critic")
    assert "agent.model.critic.models.0.bogus_key=1" in str(err.value)  # says where, as an override names it
    with pytest.raises(ValueError, match="unitz") as err:
        modules.to_config(mlp_spec(layers=[{"unitz": 4}]))
    assert "module.layers.0.unitz=4" in str(err.value)


def test_to_config_rejects_unknown_targets_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="NoSuchModule") as err:
        modules.to_config(mlp_spec(_target_="workbench.agents.common.modules.NoSuchModule"))
    assert "protomotions.agents.common.common.ObsProcessor" in str(err.value)
    assert "Reshape" not in str(err.value)  # a module's place lists modules ...
    op_as_module = {"_target_": "protomotions.agents.common.config.ModuleOperationForwardConfig"}
    with pytest.raises(ValueError, match="a module: one of"):
        modules.to_config(op_as_module)
    with pytest.raises(ValueError, match="module_operations.0._target_") as err:  # ... an operation's, operations
        modules.to_config(mlp_spec(module_operations=[{"_target_": MLP}]))
    assert "ModuleOperationSphereProjectionConfig" in str(err.value) and "ObsProcessor" not in str(err.value)


@pytest.mark.parametrize("op, value, allowed", [
    ({"_target_": "protomotions.agents.common.config.ModuleOperationPermuteConfig", "new_order": [0, 0, 1]},
     "module_operations.0.new_order=[0, 0, 1]", "a permutation of 0..2"),
    ({"_target_": "workbench.agents.common.modules.Permute"}, "module_operations.0.new_order=None", "needs it"),
    ({"_target_": "workbench.agents.common.modules.Reshape", "new_shape": ["batch_size / 2", -1]},
     "module_operations.0.new_shape.0='batch_size / 2'", "integer expression"),
    ({"_target_": "workbench.agents.common.modules.Reshape", "new_shape": ["batch_size", "frames"]},
     "new_shape=['batch_size', 'frames']", "integers"),
    ({"_target_": "workbench.agents.common.modules.Reshape", "new_shape": ["__import__('os')"]},
     "new_shape.0=", "integer expression"),
    ({"_target_": "workbench.agents.common.modules.Squeeze", "squeeze_dim": "last"},
     "module_operations.0.squeeze_dim='last'", "an integer dim"),
    ({"_target_": "workbench.agents.common.modules.Expand", "expand_shape": []},
     "module_operations.0.expand_shape=[]", "a non-empty list of integers"),
])
def test_module_operation_arguments_are_checked(op, value, allowed):
    with pytest.raises(ValueError) as err:
        modules.to_config(mlp_spec(module_operations=[op]))
    assert value in str(err.value) and allowed in str(err.value)


def test_container_key_flow_is_checked_when_configured():
    spec = {"_target_": "workbench.agents.common.modules.ModuleContainer", "in_keys": ["obs"], "out_keys": ["mu"],
            "models": [mlp_spec(in_keys=["hidden"])]}
    with pytest.raises(ValueError, match=r"models.0.in_keys=\['hidden'\].*hidden come from nowhere"):
        modules.to_config(spec)
    with pytest.raises(ValueError, match=r"module.out_keys=\['value'\]"):
        modules.to_config({**spec, "out_keys": ["value"], "models": [mlp_spec()]})
    with pytest.raises(ValueError, match=r"out_keys=\['a', 'b'\].*exactly one key"):
        modules.to_config(mlp_spec(out_keys=["a", "b"]))


@pytest.mark.parametrize("name", ["swish", "None", "Tanh", "softplus"])
def test_unknown_activation_is_refused_naming_the_allowed_ones(name):
    with pytest.raises(ValueError) as err:
        modules.build_module(mlp_spec(layers=[{"units": 4, "activation": name}]))
    message = str(err.value)
    assert f"layers.0.activation={name!r}" in message
    for allowed in ("tanh", "relu", "elu", "selu", "gelu", "silu", "sigmoid", "mish", "identity"):
        assert allowed in message


@pytest.mark.parametrize("name, cls", [("tanh", torch.nn.Tanh), ("relu", torch.nn.ReLU), ("elu", torch.nn.ELU),
                                       ("selu", torch.nn.SELU), ("gelu", torch.nn.GELU), ("silu", torch.nn.SiLU),
                                       ("sigmoid", torch.nn.Sigmoid), ("mish", torch.nn.Mish),
                                       ("identity", torch.nn.Identity)])
def test_allowed_activations(name, cls):
    assert isinstance(modules.make_activation(name), cls)


def test_layer_norm_only_on_the_first_layer():
    spec = mlp_spec(layers=[{"units": 4, "activation": "relu", "use_layer_norm": True}] * 3)
    net = modules.build_module(spec).network
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["StackedLinear", "StackedLayerNorm", "ReLU", "StackedLinear", "ReLU", "StackedLinear", "ReLU",
                     "StackedLinear"]


def test_stacked_layers_equal_torch_layers_member_by_member():
    """P = 3 members through baddbmm and the stacked LayerNorm against torch's Linear and LayerNorm."""
    from workbench.agents.common.stacked import StackedLayerNorm, StackedLinear

    torch.manual_seed(0)
    linear, norm = StackedLinear(3, 5), StackedLayerNorm(3, 5)
    x = torch.randn(3, 7, 4)
    y = linear(x)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(3, 5))
        norm.bias.copy_(torch.randn(3, 5))
    z = norm(y)
    for p in range(3):
        reference = torch.nn.Linear(4, 5)
        reference.weight.data.copy_(linear.weight[p])
        reference.bias.data.copy_(linear.bias[p])
        torch.testing.assert_close(y[p], reference(x[p]), rtol=1e-6, atol=1e-6)
        ln = torch.nn.LayerNorm(5)
        ln.weight.data.copy_(norm.weight[p])
        ln.bias.data.copy_(norm.bias[p])
        torch.testing.assert_close(z[p], ln(y[p]), rtol=1e-6, atol=1e-6)


def test_stacked_layers_without_autograd_follow_their_weights_as_they_change():
    """The no-grad path runs on cached views of the weights: after an in-place update (as the
    optimizer makes) and after a parameter is replaced, it still equals the autograd path and
    torch's own layers, for a population of 3 and for one."""
    from workbench.agents.common.stacked import StackedLayerNorm, StackedLinear

    torch.manual_seed(1)
    for members, x in ((3, torch.randn(3, 2, 4)), (1, torch.randn(2, 4))):
        linear, norm = StackedLinear(members, 5), StackedLayerNorm(members, 5)
        linear(x)  # materialise
        for change in ("none", "in place", "replaced"):
            with torch.no_grad():
                if change == "in place":
                    linear.weight.add_(0.5)
                    norm.bias.sub_(0.25)
                elif change == "replaced":
                    linear.weight = torch.nn.Parameter(torch.randn_like(linear.weight))
                    norm.weight = torch.nn.Parameter(torch.randn_like(norm.weight))
                fast = norm(linear(x))
            slow = norm(linear(x))
            assert torch.equal(fast, slow.detach()), change
            rows = x if members > 1 else x.unsqueeze(0)
            for p in range(members):
                ln = torch.nn.LayerNorm(5)
                ln.weight.data.copy_(norm.weight[p])
                ln.bias.data.copy_(norm.bias[p])
                reference = ln(torch.nn.functional.linear(rows[p], linear.weight[p], linear.bias[p]))
                torch.testing.assert_close(fast[p] if members > 1 else fast, reference, rtol=1e-6, atol=1e-6)


def test_stacked_linear_initialises_each_member_like_lazy_linear_with_its_seed():
    from workbench.agents.common.stacked import StackedLinear, initialising

    layer = StackedLinear(2, 6)
    with initialising([torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]):
        layer(torch.zeros(2, 1, 4))
    for p, seed in enumerate((11, 12)):
        torch.manual_seed(seed)
        reference = torch.nn.LazyLinear(6)
        reference(torch.zeros(1, 4))
        assert torch.equal(layer.weight[p], reference.weight) and torch.equal(layer.bias[p], reference.bias)
