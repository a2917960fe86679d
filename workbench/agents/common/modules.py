"""TensorDict network modules: MLPWithConcat, ObsProcessor, ModuleContainer, and the module ops.

Every module reads ``in_keys`` from a TensorDict and writes its ``out_keys`` into the same
TensorDict. Modules carry a leading member dimension (``num_members`` networks of one shape,
see stacked.py): tensors are ``[P, batch, ...]``, and a single agent is P = 1.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from workbench.agents.common import config as cfgs
from workbench.agents.common.running_mean_std import RunningMeanStd
from workbench.agents.common.stacked import StackedLayerNorm, StackedLinear
from workbench.agents.common.tanh import tanh as fast_tanh

ACTIVATIONS = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "mish": nn.Mish, "identity": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


# Layers whose module call (hooks, dispatch: ~4 us each) can be skipped for the op itself. With
# 1 env per step the MLP's arithmetic costs less than those calls did. Forward hooks on these
# layers are therefore not run; hook the MLP's container module instead. Tanh goes through
# workbench's tanh (faster on large CPU batches, see tanh.py).
_DIRECT_CALLS = {
    StackedLinear: lambda m, x: m.apply_to(x) if m.in_features is not None else m(x),
    nn.Tanh: lambda m, x: fast_tanh(x),
    nn.ReLU: lambda m, x: torch.relu(x),
    nn.Identity: lambda m, x: x,
}


class LayerSequence(nn.Sequential):
    """``nn.Sequential`` that runs StackedLinear, Tanh, ReLU and Identity layers as their ops
    (same parameters, same state_dict keys). Lazy layers are called normally until they materialise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            direct = _DIRECT_CALLS.get(type(layer))
            x = direct(layer, x) if direct is not None else layer(x)
        return x


# ---------------------------------------------------------------- module ops
class Forward:
    """Flatten to [P, samples, features] ([samples, features] for one member), normalise, run the
    network, reshape back. The input is [P, B, ...] or a member-major [P * B, ...] batch."""

    member_aware = True  # sees the member dimension; the other ops see [P * batch, ...]

    def __init__(self, config=None):
        pass

    def __call__(self, x: torch.Tensor, module: "NormalizedConcat") -> torch.Tensor:
        features = x.shape[-1]
        if module.num_members == 1:
            flat = x if x.dim() == 2 else x.reshape(-1, features)
        else:
            flat = x.reshape(module.num_members, -1, features)
        y = module.network(module.normalize(flat))
        return y if y.dim() == x.dim() and x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])


class Permute:
    def __init__(self, config):
        self.order = list(config.new_order)

    def __call__(self, x, module):
        return x.permute(*self.order)


class Reshape:
    def __init__(self, config):
        self.shape = list(config.new_shape)

    def __call__(self, x, module):
        shape = [x.shape[0] if s == "batch_size" else s for s in self.shape]
        return x.reshape(*shape)


class Squeeze:
    def __init__(self, config):
        self.dim = config.squeeze_dim

    def __call__(self, x, module):
        return x.squeeze(self.dim)


class Unsqueeze:
    def __init__(self, config):
        self.dim = config.unsqueeze_dim

    def __call__(self, x, module):
        return x.unsqueeze(self.dim)


class Expand:
    def __init__(self, config):
        self.shape = list(config.expand_shape)

    def __call__(self, x, module):
        return x.expand(*self.shape)


class SphereProjection:
    def __init__(self, config=None):
        pass

    def __call__(self, x, module):
        return nn.functional.normalize(x, dim=-1)


# ---------------------------------------------------------------- modules
class NormalizedConcat(TensorDictModuleBase):
    """Concatenate in_keys, apply the module ops (with optional obs normalisation)."""

    def __init__(self, config, num_members: int = 1):
        super().__init__()
        self.config = config
        self.num_members = num_members
        self.in_keys = list(config.in_keys)
        self.out_keys = list(config.out_keys)
        self.operations = [build_operation(op) for op in config.module_operations]
        self.obs_norm: RunningMeanStd | None = None
        self.network: nn.Module = nn.Identity()
        # members whose normaliser records moments in train mode (None: all); the agent sets it
        # so a member whose update is skipped keeps its statistics, as a single run would
        self.update_members: torch.Tensor | None = None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize_obs:
            return x
        if self.obs_norm is None:  # sized lazily, like the lazy layers
            self.obs_norm = RunningMeanStd((x.shape[-1],), self.config.norm_clamp_value,
                                           self.config.norm_ema_decay, num_members=self.num_members).to(x.device)
        if self.training:  # moments are recorded in train mode only, after normalising
            normed = self.obs_norm.norm(x)
            self.obs_norm.update(x, self.update_members)
            return normed
        return self.obs_norm.norm(x)

    def concat_inputs(self, td: TensorDictBase) -> torch.Tensor:
        if len(self.in_keys) == 1:
            return td.get(self.in_keys[0])
        return torch.cat([td.get(k) for k in self.in_keys], dim=-1)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        """``td``: a [P, B] batch, or a member-major [P * B] one (the rollout's env batch)."""
        x = self.concat_inputs(td)
        members_first = td.batch_dims == 2
        for op in self.operations:
            if members_first and not getattr(op, "member_aware", False):
                # the reference's ops act on a batch: members and samples are one batch here
                y = op(x.reshape(-1, *x.shape[2:]), self)
                x = y.reshape(self.num_members, -1, *y.shape[1:])
            else:
                x = op(x, self)
        td.set(self.out_keys[0], self.finish(x))
        return td

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ObsProcessor(NormalizedConcat):
    """Normalisation and reshapes only."""


class MLPWithConcat(NormalizedConcat):
    def __init__(self, config: cfgs.MLPWithConcatConfig, num_members: int = 1):
        super().__init__(config, num_members)
        if len(self.out_keys) != 1:
            raise ValueError(f"MLPWithConcat needs exactly one out_key, got {self.out_keys}")
        layers: list[nn.Module] = []
        for i, layer in enumerate(config.layers):
            layers.append(StackedLinear(num_members, layer.units))
            if layer.use_layer_norm and i == 0:  # the reference normalises the first layer only
                layers.append(StackedLayerNorm(num_members, layer.units))
            layers.append(make_activation(layer.activation))
        layers.append(StackedLinear(num_members, config.num_out))
        self.network = LayerSequence(*layers)
        self.output_activation = make_activation(config.output_activation)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_activation(x)


class ModuleContainer(TensorDictModuleBase):
    """Runs child modules in order on one shared TensorDict."""

    def __init__(self, config: cfgs.ModuleContainerConfig, num_members: int = 1):
        super().__init__()
        self.in_keys = list(config.in_keys)
        self.out_keys = list(config.out_keys)
        self.models = nn.ModuleList(build_module(m, num_members) for m in config.models)
        available = set(self.in_keys)
        for child in self.models:
            missing = [k for k in child.in_keys if k not in available]
            if missing:
                raise ValueError(f"{type(child).__name__} reads {missing}, which neither the container's "
                                 f"in_keys {self.in_keys} nor an earlier child provides")
            available.update(child.out_keys)
        unproduced = [k for k in self.out_keys if k not in available]
        if unproduced:
            raise ValueError(f"container out_keys {unproduced} are produced by no child")

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        for child in self.models:
            td = child(td)
        return td


# ---------------------------------------------------------------- building from configs
CONFIG_FOR_TARGET = {
    f"{cfgs.MODULES}.MLPWithConcat": cfgs.MLPWithConcatConfig,
    f"{cfgs.MODULES}.ObsProcessor": cfgs.ObsProcessorConfig,
    f"{cfgs.MODULES}.ModuleContainer": cfgs.ModuleContainerConfig,
    f"{cfgs.MODULES}.Forward": cfgs.ModuleOperationForwardConfig,
    f"{cfgs.MODULES}.Permute": cfgs.ModuleOperationPermuteConfig,
    f"{cfgs.MODULES}.Reshape": cfgs.ModuleOperationReshapeConfig,
    f"{cfgs.MODULES}.Squeeze": cfgs.ModuleOperationSqueezeConfig,
    f"{cfgs.MODULES}.Unsqueeze": cfgs.ModuleOperationUnsqueezeConfig,
    f"{cfgs.MODULES}.Expand": cfgs.ModuleOperationExpandConfig,
    f"{cfgs.MODULES}.SphereProjection": cfgs.ModuleOperationSphereProjectionConfig,
}
# ProtoMotions' own target paths, so configs written for the seed port unchanged.
for _name in ("MLPWithConcat", "ModuleContainer", "ObsProcessor"):
    CONFIG_FOR_TARGET[f"protomotions.agents.common.mlp.{_name}"] = CONFIG_FOR_TARGET[f"{cfgs.MODULES}.{_name}"]


def to_config(spec: Any, where: str = "module") -> Any:
    """Turn a mapping with ``_target_`` into the config dataclass it names (recursively)."""
    if dataclasses.is_dataclass(spec):
        return spec
    if isinstance(spec, (DictConfig, ListConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ValueError(f"{where}: expected a module config with a _target_, got {spec!r}")
    target = spec["_target_"]
    if target not in CONFIG_FOR_TARGET:
        raise ValueError(f"{where}: unknown _target_ {target!r}; allowed: {', '.join(sorted(CONFIG_FOR_TARGET))}")
    cls = CONFIG_FOR_TARGET[target]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(allowed)}")
    kwargs = dict(spec)
    kwargs["_target_"] = next(t for t, c in CONFIG_FOR_TARGET.items() if c is cls and t.startswith("workbench"))
    if "layers" in kwargs:
        kwargs["layers"] = [_layer_config(layer, f"{where}.layers[{i}]") for i, layer in enumerate(kwargs["layers"])]
    if "module_operations" in kwargs:
        kwargs["module_operations"] = [to_config(op, f"{where}.module_operations")
                                       for op in kwargs["module_operations"]]
    if "models" in kwargs:
        kwargs["models"] = [to_config(m, f"{where}.models[{i}]") for i, m in enumerate(kwargs["models"])]
    return cls(**kwargs)


def _layer_config(spec: Any, where: str) -> cfgs.MLPLayerConfig:
    if dataclasses.is_dataclass(spec):
        return spec
    allowed = {f.name for f in dataclasses.fields(cfgs.MLPLayerConfig)}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for MLPLayerConfig; allowed: {sorted(allowed)}")
    return cfgs.MLPLayerConfig(**spec)


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_operation(spec: Any):
    config = to_config(spec, "module_operations")
    return _import(config._target_)(config)


def build_module(spec: Any, num_members: int = 1) -> TensorDictModuleBase:
    config = to_config(spec)
    return _import(config._target_)(config, num_members)
