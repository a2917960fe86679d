"""``python -m workbench.testing.fake_sweep [-m] [overrides]``: a Hydra app shaped like ``workbench train``
(same dispatch to ``run_trial`` when ``cfg.trial`` is set) around the fake training."""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    from workbench.testing.fake_sweep.training import FakePopulationRun, run_population, run_training

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("trial"):
        from workbench.sweep.trial import run_trial

        return run_trial(cfg, output_dir, run_training, run_population=run_population,
                         population_run=FakePopulationRun)
    return run_training(cfg, output_dir)


if __name__ == "__main__":
    main()
