"""TensorDict network modules: MLPWithConcat, ObsProcessor, ModuleContainer, and the module ops.

Every module reads ``in_keys`` from a TensorDict and writes its ``out_keys`` into the same
TensorDict. Modules carry a leading member dimension (``num_members`` networks of one shape,
see stacked.py): tensors are ``[P, batch, ...]``, and a single agent is P = 1.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from workbench.agents.common import config as cfgs
from workbench.agents.common.running_mean_std import RunningMeanStd
from workbench.agents.common.stacked import StackedLayerNorm, StackedLinear
from workbench.agents.targets import accepted_targets, canonical_target

ACTIVATIONS = {  # ProtoMotions' (relu, tanh, elu, selu, gelu, silu, sigmoid), plus mish and identity
    "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "mish": nn.Mish, "identity": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


# Layers whose module call (hooks, dispatch: ~4 us each) can be skipped for the op itself. With
# 1 env per step the MLP's arithmetic costs less than those calls did. Forward hooks on these
# layers are therefore not run; hook the MLP's container module instead.
_DIRECT_CALLS = {
    StackedLinear: lambda m, x: m.apply_to(x) if m.in_features is not None else m(x),
    nn.Tanh: lambda m, x: torch.tanh(x),
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
# Each op is called as op(x, module, members, batch_size). ``members`` is the number of leading
# member dims in front of the reference's batch dim (1 for [P, B, ...], 0 for a single agent's
# [B, ...]): the ops' dims and shapes count from the batch dim, as in ProtoMotions, so each member
# sees exactly what one ProtoMotions agent would. ``batch_size`` is the batch size of the input,
# before any op (ProtoMotions reads it once, from the concatenated input).
class Forward:
    """Flatten to [P, samples, features] ([samples, features] for one member), normalise, run the
    network, reshape back. The input is [P, B, ...] or a member-major [P * B, ...] batch."""

    def __init__(self, config=None):
        pass

    def __call__(self, x: torch.Tensor, module: "NormalizedConcat", members: int = 0, batch_size: int = 0
                 ) -> torch.Tensor:
        features = x.shape[-1]
        if module.num_members == 1:
            flat = x if x.dim() == 2 else x.reshape(-1, features)
        else:
            flat = x.reshape(module.num_members, -1, features)
        y = module.network(module.normalize(flat))
        return y if y.dim() == x.dim() and x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])


def _batch_dim(dim: int, members: int) -> int:
    """A dim counted from the batch dim, as a dim of the tensor with ``members`` dims in front."""
    return dim + members if dim >= 0 else dim


class Permute:
    def __init__(self, config: cfgs.ModuleOperationPermuteConfig):
        self.order = list(config.new_order)

    def __call__(self, x, module, members=0, batch_size=0):
        rank = x.dim() - members
        return x.permute(*range(members), *(members + d % rank for d in self.order))


class Reshape:
    def __init__(self, config: cfgs.ModuleOperationReshapeConfig):
        self.shape = list(config.new_shape)
        self.first = batch_size_expression(self.shape[0]) if isinstance(self.shape[0], str) else None

    def __call__(self, x, module, members=0, batch_size=0):
        shape = [self.first(batch_size), *self.shape[1:]] if self.first is not None else self.shape
        return x.reshape(*x.shape[:members], *shape)


class Squeeze:
    def __init__(self, config: cfgs.ModuleOperationSqueezeConfig):
        self.dim = config.squeeze_dim

    def __call__(self, x, module, members=0, batch_size=0):
        return x.squeeze(_batch_dim(self.dim, members))


class Unsqueeze:
    def __init__(self, config: cfgs.ModuleOperationUnsqueezeConfig):
        self.dim = config.unsqueeze_dim

    def __call__(self, x, module, members=0, batch_size=0):
        return x.unsqueeze(_batch_dim(self.dim, members))


class Expand:
    def __init__(self, config: cfgs.ModuleOperationExpandConfig):
        self.shape = list(config.expand_shape)

    def __call__(self, x, module, members=0, batch_size=0):
        return x.expand(*x.shape[:members], *self.shape)


class SphereProjection:
    def __init__(self, config=None):
        pass

    def __call__(self, x, module, members=0, batch_size=0):
        return nn.functional.normalize(x, dim=-1)


_BATCH_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def batch_size_expression(text: str) -> Callable[[int], int]:
    """``"batch_size"`` or an integer expression of it (``"batch_size * 4"``): the function of the
    batch size it names. ProtoMotions evaluates the text with Python; here only integers,
    ``batch_size``, ``+ - * //`` and parentheses are allowed (no ``/``: a shape must be an integer)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        tree = None

    def ok(node) -> bool:
        if isinstance(node, ast.BinOp):
            return type(node.op) in _BATCH_OPS and ok(node.left) and ok(node.right)
        if isinstance(node, ast.UnaryOp):
            return isinstance(node.op, ast.USub) and ok(node.operand)
        if isinstance(node, ast.Constant):
            return type(node.value) is int
        return isinstance(node, ast.Name) and node.id == "batch_size"

    if tree is None or not ok(tree) or "batch_size" not in text:
        raise ValueError(f"{text!r} is not 'batch_size' or an integer expression of it (+, -, *, //)")

    def value(node, batch_size: int) -> int:
        if isinstance(node, ast.BinOp):
            return _BATCH_OPS[type(node.op)](value(node.left, batch_size), value(node.right, batch_size))
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand, batch_size)
        return node.value if isinstance(node, ast.Constant) else batch_size

    return lambda batch_size: value(tree, batch_size)


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
        # ops other than Forward change shapes: they see the batch of one member at a time
        self.reshapes = any(not isinstance(op, Forward) for op in self.operations)
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
        if not self.reshapes:  # Forward only (every shipped config): it takes either batch as it is
            for op in self.operations:
                x = op(x, self)
        else:
            member_major = td.batch_dims == 1 and self.num_members > 1
            if member_major:  # [P * B, ...] as [P, B, ...]: an op must never mix two members' samples
                x = x.reshape(self.num_members, -1, *x.shape[1:])
            members = 1 if td.batch_dims == 2 or member_major else 0
            batch_size = x.shape[members]
            for op in self.operations:
                x = op(x, self, members, batch_size)
            if member_major:
                x = x.flatten(0, 1)
        td.set(self.out_keys[0], self.finish(x))
        return td

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ObsProcessor(NormalizedConcat):
    """Concatenation, the module ops and normalisation (in a Forward op); no network."""


class MLPWithConcat(NormalizedConcat):
    def __init__(self, config: cfgs.MLPWithConcatConfig, num_members: int = 1):
        super().__init__(config, num_members)
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
        # build_module checked the key flow (each child reads what the container's in_keys or an
        # earlier child provide; every container out_key is produced): _check_values
        self.models = nn.ModuleList(build_module(m, num_members) for m in config.models)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        for child in self.models:
            td = child(td)
        return td


# ---------------------------------------------------------------- building from configs
MODULE_CONFIGS = {
    f"{cfgs.MODULES}.MLPWithConcat": cfgs.MLPWithConcatConfig,
    f"{cfgs.MODULES}.ObsProcessor": cfgs.ObsProcessorConfig,
    f"{cfgs.MODULES}.ModuleContainer": cfgs.ModuleContainerConfig,
}
OPERATION_CONFIGS = {
    f"{cfgs.MODULES}.Forward": cfgs.ModuleOperationForwardConfig,
    f"{cfgs.MODULES}.Permute": cfgs.ModuleOperationPermuteConfig,
    f"{cfgs.MODULES}.Reshape": cfgs.ModuleOperationReshapeConfig,
    f"{cfgs.MODULES}.Squeeze": cfgs.ModuleOperationSqueezeConfig,
    f"{cfgs.MODULES}.Unsqueeze": cfgs.ModuleOperationUnsqueezeConfig,
    f"{cfgs.MODULES}.Expand": cfgs.ModuleOperationExpandConfig,
    f"{cfgs.MODULES}.SphereProjection": cfgs.ModuleOperationSphereProjectionConfig,
}


class ModuleConfigError(ValueError):
    """A network config value that cannot be built: where it is (a dotted key, as an override
    names it), the value and what is allowed."""

    def __init__(self, where: str, value: Any, allowed: str):
        self.where, self.value, self.allowed = where, value, allowed
        super().__init__(f"{where}={value!r} is not allowed: {allowed}")


def to_config(spec: Any, where: str = "module", default: type | None = None) -> Any:
    """Turn a module config (a mapping with ``_target_``, or the dataclass itself) into its checked
    dataclass, children included. ``_target_`` may be a workbench path or a ProtoMotions one
    (``workbench.agents.targets``); the dataclass always holds the workbench path. ``default``: the
    config class a mapping without ``_target_`` is (the declared type of the field it fills)."""
    return _to_config(spec, where, MODULE_CONFIGS, default)


def _to_config(spec: Any, where: str, classes: dict[str, type], default: type | None = None) -> Any:
    kind = "module" if classes is MODULE_CONFIGS else "module operation"
    if isinstance(spec, (DictConfig, ListConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        spec = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    if default is not None and isinstance(spec, Mapping) and "_target_" not in spec:
        spec = {**spec, "_target_": default._target_}
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ModuleConfigError(where, spec, f"a {kind} config: a mapping with a _target_ naming one of "
                                             f"{_names(classes)}")
    target = spec["_target_"]
    cls = classes.get(canonical_target(str(target)))
    if cls is None:
        raise ModuleConfigError(f"{where}._target_", target, f"a {kind}: one of {_names(classes)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in spec if k not in fields]
    if unknown:
        others = f" (also unknown: {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else ""
        raise ModuleConfigError(f"{where}.{unknown[0]}", spec[unknown[0]],
                                f"not a key of {cls.__name__}{others}; known keys: {', '.join(fields)}")
    for name, f in fields.items():
        if name not in spec and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ModuleConfigError(f"{where}.{name}", None, f"{cls.__name__} needs it (no default)")
    kwargs = {**spec, "_target_": next(t for t, c in classes.items() if c is cls)}
    if "layers" in kwargs:
        kwargs["layers"] = [_layer_config(layer, f"{where}.layers.{i}") for i, layer in enumerate(kwargs["layers"])]
    if "module_operations" in kwargs:
        kwargs["module_operations"] = [_to_config(op, f"{where}.module_operations.{i}", OPERATION_CONFIGS)
                                       for i, op in enumerate(kwargs["module_operations"])]
    if "models" in kwargs:
        kwargs["models"] = [_to_config(m, f"{where}.models.{i}", MODULE_CONFIGS)
                            for i, m in enumerate(kwargs["models"])]
    config = cls(**kwargs)
    _check_values(config, where)
    return config


def _names(classes: dict[str, type]) -> str:
    return ", ".join(name for target in classes for name in accepted_targets(target))


def _layer_config(spec: Any, where: str) -> cfgs.MLPLayerConfig:
    if not dataclasses.is_dataclass(spec):
        allowed = [f.name for f in dataclasses.fields(cfgs.MLPLayerConfig)]
        if not isinstance(spec, Mapping):
            raise ModuleConfigError(where, spec, f"a layer: a mapping of {', '.join(allowed)}")
        unknown = [k for k in spec if k not in allowed]
        if unknown:
            raise ModuleConfigError(f"{where}.{unknown[0]}", spec[unknown[0]],
                                    f"not a key of MLPLayerConfig; known keys: {', '.join(allowed)}")
        spec = cfgs.MLPLayerConfig(**spec)
    if spec.activation is not None and spec.activation not in ACTIVATIONS:
        raise ModuleConfigError(f"{where}.activation", spec.activation, f"one of {', '.join(ACTIVATIONS)} or null")
    if not _is_int(spec.units) or spec.units < 1:
        raise ModuleConfigError(f"{where}.units", spec.units, "an integer >= 1")
    return spec


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: Any, where: str) -> None:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
        raise ModuleConfigError(where, value, "a non-empty list of integers")


def produced_keys(config: Any) -> list[str]:
    """The keys a checked module config leaves in the TensorDict (a container: every child's too)."""
    if isinstance(config, cfgs.ModuleContainerConfig):
        keys = list(config.in_keys)
        for child in config.models:
            keys += [k for k in produced_keys(child) if k not in keys]
        return keys
    return list(config.out_keys)


def _check_values(config: Any, where: str) -> None:
    """What ProtoMotions would only find out when the network runs (or never)."""
    if isinstance(config, cfgs.ModuleContainerConfig):
        available = list(config.in_keys)
        for i, child in enumerate(config.models):
            missing = [k for k in child.in_keys if k not in available]
            if missing:
                raise ModuleConfigError(f"{where}.models.{i}.in_keys", list(child.in_keys),
                                        f"keys the container's in_keys or an earlier child provide "
                                        f"({', '.join(available)}); {', '.join(missing)} come from nowhere")
            available += [k for k in produced_keys(child) if k not in available]
        unproduced = [k for k in config.out_keys if k not in available]
        if unproduced:
            raise ModuleConfigError(f"{where}.out_keys", list(config.out_keys),
                                    f"keys some child produces ({', '.join(available)})")
    if isinstance(config, cfgs.MLPWithConcatConfig) and (config.num_out == MISSING or
                                                          not (config.num_out is None or _is_int(config.num_out))):
        raise ModuleConfigError(f"{where}.num_out", config.num_out, "the output size, an integer")
    if isinstance(config, (cfgs.MLPWithConcatConfig, cfgs.ObsProcessorConfig)) and len(config.out_keys) != 1:
        raise ModuleConfigError(f"{where}.out_keys", list(config.out_keys), "exactly one key")
    if isinstance(config, cfgs.MLPWithConcatConfig) and config.output_activation not in (None, *ACTIVATIONS):
        raise ModuleConfigError(f"{where}.output_activation", config.output_activation,
                                f"one of {', '.join(ACTIVATIONS)} or null")
    if isinstance(config, cfgs.ModuleOperationPermuteConfig):
        order = config.new_order
        _int_list(order, f"{where}.new_order")
        if sorted(d % len(order) for d in order) != list(range(len(order))):
            raise ModuleConfigError(f"{where}.new_order", list(order), f"a permutation of 0..{len(order) - 1}")
    elif isinstance(config, cfgs.ModuleOperationReshapeConfig):
        shape = config.new_shape
        if not isinstance(shape, (list, tuple)) or not shape:
            raise ModuleConfigError(f"{where}.new_shape", shape, "a non-empty list")
        if isinstance(shape[0], str):
            try:
                batch_size_expression(shape[0])
            except ValueError as err:
                raise ModuleConfigError(f"{where}.new_shape.0", shape[0], str(err).split(" is ", 1)[1]) from None
        if not all(_is_int(v) for v in shape[isinstance(shape[0], str):]):
            raise ModuleConfigError(f"{where}.new_shape", list(shape),
                                    "integers (-1 infers one), the first may be 'batch_size' or an expression of it")
    elif isinstance(config, (cfgs.ModuleOperationSqueezeConfig, cfgs.ModuleOperationUnsqueezeConfig)):
        name = "squeeze_dim" if isinstance(config, cfgs.ModuleOperationSqueezeConfig) else "unsqueeze_dim"
        if not _is_int(getattr(config, name)):
            raise ModuleConfigError(f"{where}.{name}", getattr(config, name), "an integer dim")
    elif isinstance(config, cfgs.ModuleOperationExpandConfig):
        _int_list(config.expand_shape, f"{where}.expand_shape")


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_operation(spec: Any):
    config = _to_config(spec, "module_operations", OPERATION_CONFIGS)
    return _import(config._target_)(config)


def build_module(spec: Any, num_members: int = 1, default: type | None = None) -> TensorDictModuleBase:
    config = to_config(spec, default=default)
    return _import(config._target_)(config, num_members)
