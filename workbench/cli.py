"""The ``workbench`` command: train | sweep | runs | report.

``workbench train`` is a Hydra app (``--cfg job``, ``--help``, ``-m``, overrides all work);
the other subcommands are plain argparse programs in their own packages.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from workbench.config import ConfigError, register_configs

from workbench.packaged import CONF_DIR  # in the wheel, or the checkout's conf/
USAGE = """usage: workbench <command> [args]

commands:
  train [HYDRA_OVERRIDES...]      one training run (a Hydra app; -m +sweep=<name> runs an Optuna sweep)
  sweep <name> [--workers N] [--n-trials N] [--storage URL] [--study-name S] [overrides...]
                                  an Optuna sweep with N worker processes sharing one study
  runs [DIR]                      list local W&B runs
  report <study> [--storage URL] [--out PATH] [--wandb-report auto|always|never]
                                  write an HTML report of a sweep (and a W&B report when online)
"""


def _discard_run_dir(output_dir: Path) -> None:
    """Remove what Hydra wrote for a run that was refused before it started (nothing else is there)."""
    hydra_written = {".hydra", "train.log"}
    if output_dir.is_dir() and {p.name for p in output_dir.iterdir()} <= hydra_written:
        shutil.rmtree(output_dir, ignore_errors=True)
        if output_dir.parent.is_dir() and not any(output_dir.parent.iterdir()):
            output_dir.parent.rmdir()  # the date folder Hydra made for this run alone


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def train_app(cfg: DictConfig):
    from workbench.agents.common.checkpoint import CheckpointError
    from workbench.agents.ppo.population import PopulationConfigError
    from workbench.envs import EnvConfigError
    from workbench.train import run_training

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.get("trial") is not None:
            from workbench.sweep.trial import run_trial
            return run_trial(cfg, output_dir, run_training)
        from workbench.train_population import is_population, run_population
        if is_population(cfg):
            results = run_population(cfg, output_dir)
            return [r.final_eval_return for r in results]
        result = run_training(cfg, output_dir)
    except (ConfigError, EnvConfigError, CheckpointError, PopulationConfigError) as err:
        if cfg.get("trial") is not None:
            raise
        print(f"workbench train: error: {err}", file=sys.stderr)
        if not isinstance(err, CheckpointError) or not (output_dir / "last.ckpt").exists():
            _discard_run_dir(output_dir)
        sys.exit(2)
    return result.final_eval_return


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        register_configs()
        sys.argv = [f"{sys.argv[0]} train", *rest]
        train_app()
        return 0
    if command == "sweep":
        from workbench.sweep.cli import sweep_main
        return sweep_main(rest)
    if command == "runs":
        from workbench.tracking.cli import runs_main
        return runs_main(rest)
    if command == "report":
        from workbench.analysis.cli import report_main
        return report_main(rest)
    print(f"workbench: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
