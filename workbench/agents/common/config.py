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


# Module operations, applied in order to the concatenated input of an ObsProcessor or MLPWithConcat.
# As in ProtoMotions, the ops see one batch ([batch, ...]): dims and shapes count from the batch dim;
# a population's member dimension stays outside them (modules.py). Their arguments are required, as
# in ProtoMotions; the required field comes first, so ``ModuleOperationSqueezeConfig(1)`` works there too.
@dataclass
class ModuleOperationForwardConfig:
    """Flatten to [samples, features], normalise (normalize_obs), reshape back, run the network."""
    _target_: str = f"{MODULES}.Forward"


@dataclass
class ModuleOperationPermuteConfig:
    new_order: List[int]  # e.g. [0, 2, 1] swaps dims 1 and 2
    _target_: str = f"{MODULES}.Permute"


@dataclass
class ModuleOperationReshapeConfig:
    # ints (-1 infers one); the first entry may be "batch_size" (the input's batch size) or an
    # integer expression of it such as "batch_size * 4"
    new_shape: List[Any]
    _target_: str = f"{MODULES}.Reshape"


@dataclass
class ModuleOperationSqueezeConfig:
    squeeze_dim: int
    _target_: str = f"{MODULES}.Squeeze"


@dataclass
class ModuleOperationUnsqueezeConfig:
    unsqueeze_dim: int
    _target_: str = f"{MODULES}.Unsqueeze"


@dataclass
class ModuleOperationExpandConfig:
    expand_shape: List[int]  # -1 keeps a dim's size
    _target_: str = f"{MODULES}.Expand"


@dataclass
class ModuleOperationSphereProjectionConfig:
    """L2-normalise the last dim (onto the unit sphere)."""
    _target_: str = f"{MODULES}.SphereProjection"


@dataclass
class ObsProcessorConfig(NormObsBaseConfig):
    """Concatenation, reshapes and normalisation only: no network. As in ProtoMotions, nothing but
    the concatenation happens by default (no operations), and inputs are normalised only by a
    Forward operation, even with normalize_obs."""
    _target_: str = f"{MODULES}.ObsProcessor"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)  # exactly one
    module_operations: List[Any] = field(default_factory=list)


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
