"""Module, optimizer and normalisation configs (ProtoMotions' agents/common/config.py surface).

These are plain dataclasses usable from Python and as Hydra structured configs.
Children of a ``ModuleContainerConfig`` are typed ``Any`` so a YAML file can hold
any module config; ``workbench.agents.common.modules.build_module`` turns such a
mapping into the dataclass its ``_target_`` names and rejects unknown keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from omegaconf import MISSING

MODULES = "workbench.agents.common.modules"


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    eps: float = 1e-8
    betas: Tuple[float, float] = (0.9, 0.999)


@dataclass
class BaseModelConfig:
    _target_: str = "workbench.agents.common.base_model.BaseModel"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)


@dataclass
class NormObsBaseConfig:
    normalize_obs: bool = False
    norm_clamp_value: float = 5.0
    norm_ema_decay: Optional[float] = 0.999  # None = Welford all-time statistics


@dataclass
class MLPLayerConfig:
    units: int = 512
    activation: str = "relu"
    use_layer_norm: bool = False


# Module operations, applied in order to the concatenated input of an MLPWithConcat.
@dataclass
class ModuleOperationForwardConfig:
    _target_: str = f"{MODULES}.Forward"


@dataclass
class ModuleOperationPermuteConfig:
    _target_: str = f"{MODULES}.Permute"
    new_order: List[int] = field(default_factory=list)


@dataclass
class ModuleOperationReshapeConfig:
    _target_: str = f"{MODULES}.Reshape"
    new_shape: List[Any] = field(default_factory=list)  # a leading "batch_size" is the real batch size


@dataclass
class ModuleOperationSqueezeConfig:
    _target_: str = f"{MODULES}.Squeeze"
    squeeze_dim: int = -1


@dataclass
class ModuleOperationUnsqueezeConfig:
    _target_: str = f"{MODULES}.Unsqueeze"
    unsqueeze_dim: int = -1


@dataclass
class ModuleOperationExpandConfig:
    _target_: str = f"{MODULES}.Expand"
    expand_shape: List[int] = field(default_factory=list)


@dataclass
class ModuleOperationSphereProjectionConfig:
    _target_: str = f"{MODULES}.SphereProjection"


@dataclass
class ObsProcessorConfig(NormObsBaseConfig):
    """Normalisation and reshapes only: no network."""
    _target_: str = f"{MODULES}.ObsProcessor"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)
    module_operations: List[Any] = field(default_factory=lambda: [ModuleOperationForwardConfig()])


@dataclass
class MLPWithConcatConfig(NormObsBaseConfig):
    num_out: int = MISSING
    layers: List[MLPLayerConfig] = field(default_factory=list)
    _target_: str = f"{MODULES}.MLPWithConcat"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)  # exactly one
    output_activation: Optional[str] = None
    module_operations: List[Any] = field(default_factory=lambda: [ModuleOperationForwardConfig()])


@dataclass
class ModuleContainerConfig:
    models: List[Any] = field(default_factory=list)
    _target_: str = f"{MODULES}.ModuleContainer"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)
