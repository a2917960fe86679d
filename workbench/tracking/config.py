"""W&B settings: the ``logger`` node of the Hydra config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class LoggerConfig:
    mode: str = "offline"  # offline | online | disabled; WANDB_MODE overrides when set
    project: str = "workbench"  # the W&B project the run goes to
    entity: Optional[str] = None  # W&B user or team; None = the account's default
    group: Optional[str] = None  # groups runs in the UI (the sweeper puts a study's trials in one)
    tags: List[str] = field(default_factory=list)
    job_type: str = "train"  # W&B job type (the sweeper sets sweep-trial or reevaluation)
    name: Optional[str] = None  # the run's display name; None = W&B's generated one
    notes: Optional[str] = None  # free text shown with the run
    # Seconds wandb.init may take (online: server round trips) before the run falls back to offline.
    init_timeout: float = 60.0
