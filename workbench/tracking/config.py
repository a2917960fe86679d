"""W&B settings: the ``logger`` node of the Hydra config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class LoggerConfig:
    mode: str = "offline"  # offline | online | disabled; WANDB_MODE overrides when set
    project: str = "workbench"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    job_type: str = "train"
    name: Optional[str] = None
    notes: Optional[str] = None
    # Seconds wandb.init may take (online: server round trips) before the run falls back to offline.
    init_timeout: float = 60.0
