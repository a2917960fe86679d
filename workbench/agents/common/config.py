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
    _target_: str = "torch.optim.Adam"  # torch.optim.Adam or torch.optim.AdamW (decoupled weight decay)
    lr: float = 1e-4  # learning rate (the start value when agent.adaptive_lr is on)
    weight_decay: float = 0.0
    eps: float = 1e-8  # Adam's denominator is sqrt(v) + eps
    betas: Tuple[float, float] = (0.9, 0.999)  # decay of the first and second moment estimates


@dataclass
class BaseModelConfig:
    _target_: str = "workbench.agents.common.base_model.BaseModel"
    in_keys: List[str] = field(default_factory=list)  # TensorDict keys the model reads (observations)
    out_keys: List[str] = field(default_factory=list)  # keys it writes


@dataclass
class NormObsBaseConfig:
    """Running mean/std normalisation of a module's concatenated input, updated in train mode only
    (on the minibatch forwards of the updates, not during the rollout)."""
    normalize_obs: bool = False
    norm_clamp_value: float = 5.0  # clamp (+-) of the normalised input
    norm_ema_decay: Optional[float] = 0.999  # EMA decay of the statistics; None = Welford all-time statistics


@dataclass
class MLPLayerConfig:
    """One hidden layer: Linear(units), then the activation."""
    units: int = 512
    activation: str = "relu"  # tanh | relu | elu | gelu | silu | mish | identity
    use_layer_norm: bool = False  # LayerNorm between Linear and activation; honoured on the first layer only


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
    in_keys: List[str] = field(default_factory=list)  # concatenated along the last dimension
    out_keys: List[str] = field(default_factory=list)  # exactly one
    module_operations: List[Any] = field(default_factory=list)  # applied in order to the concatenation


@dataclass
class MLPWithConcatConfig(NormObsBaseConfig):
    """An MLP over the concatenation of ``in_keys``; default PyTorch Linear initialisation."""
    num_out: int = MISSING  # size of the output layer
    layers: List[MLPLayerConfig] = field(default_factory=list)  # the hidden layers, input side first
    _target_: str = f"{MODULES}.MLPWithConcat"
    in_keys: List[str] = field(default_factory=list)  # concatenated along the last dimension
    out_keys: List[str] = field(default_factory=list)  # exactly one
    output_activation: Optional[str] = None  # applied to the output layer; None = linear output
    # applied in order to the concatenated input; Forward normalises (normalize_obs) and runs the MLP
    module_operations: List[Any] = field(default_factory=lambda: [ModuleOperationForwardConfig()])


@dataclass
class ModuleContainerConfig:
    # module configs run in order on one TensorDict; each reads the container's in_keys or earlier outputs
    models: List[Any] = field(default_factory=list)
    _target_: str = f"{MODULES}.ModuleContainer"
    in_keys: List[str] = field(default_factory=list)
    out_keys: List[str] = field(default_factory=list)  # each must be written by some child
