"""The ``workbench`` command: train | sweep | runs | report.

``workbench train`` is a Hydra app (``--cfg job``, ``--help``, ``-m``, overrides all work);
the other subcommands are plain argparse programs in their own packages.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.config import ConfigError, register_configs
from workbench.errors import EXIT_REFUSED, one_line, refuse
from workbench.tracking.secrets import scrub_secrets

# Overrides appended to `workbench train`'s own, as a JSON list: how `workbench sweep` hands its
# workers values holding a secret, which a command line would show to every user of the machine.
ENV_OVERRIDES = "WORKBENCH_OVERRIDES"
# Where the run's Hydra files go; Hydra's own writer is off (hydra.output_subdir: null) because it
# would write passwords inside config values in clear.
HYDRA_FILES_DIR = ".hydra"

from workbench.packaged import CONF_DIR  # in the wheel, or the checkout's conf/
USAGE = """usage: workbench <command> [args]

commands:
  train [HYDRA_OVERRIDES...]      one training run (a Hydra app; -m +sweep=<name> runs an Optuna sweep)
  sweep <name> [--workers N] [--n-trials N] [--storage URL] [--study-name S] [overrides...]
                                  an Optuna sweep with N worker processes sharing one study
  reevaluate <study> [--storage URL] [--top-k K] [--seeds S] [--budget N]
                                  retrain the top-K configs and the defaults on fresh seeds, as one population
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


def save_hydra_files(cfg: DictConfig, output_dir: Path) -> None:
    """What Hydra saves in ``.hydra/`` (config, hydra settings, overrides), secrets masked."""
    hydra_cfg = HydraConfig.get()
    files = {
        "config.yaml": OmegaConf.to_container(cfg, resolve=False),
        "hydra.yaml": {"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)},
        "overrides.yaml": OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False),
    }
    directory = output_dir / HYDRA_FILES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(OmegaConf.to_yaml(OmegaConf.create(scrub_secrets(content))))


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def train_app(cfg: DictConfig):
    from workbench.agents.common.checkpoint import CheckpointError
    from workbench.agents.ppo.population import PopulationConfigError
    from workbench.envs import EnvConfigError
    from workbench.train import run_training

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    save_hydra_files(cfg, output_dir)
    try:
        if cfg.get("trial") is not None:
            from workbench.sweep.trial import run_trial
            from workbench.train_population import run_population
            return run_trial(cfg, output_dir, run_training, run_population=run_population)
        from workbench.train_population import is_population, run_population
        if is_population(cfg):
            results = run_population(cfg, output_dir)
            return [r.final_eval_return for r in results]
        result = run_training(cfg, output_dir)
    except (ConfigError, EnvConfigError, CheckpointError, PopulationConfigError) as err:
        if cfg.get("trial") is not None:
            raise
        if not isinstance(err, CheckpointError) or not (output_dir / "last.ckpt").exists():
            _discard_run_dir(output_dir)
        refuse("workbench train", one_line(err))
    return result.final_eval_return


def _user_errors() -> tuple[type[BaseException], ...]:
    """What bad input or a failing machine raise, as opposed to a bug (which keeps its traceback)."""
    from workbench.agents.common.checkpoint import CheckpointError
    from workbench.envs import EnvConfigError

    return (HydraException, OmegaConfBaseException, ConfigError, EnvConfigError, CheckpointError, OSError)


@contextlib.contextmanager
def _hydra_errors_raised() -> Iterator[None]:
    """Hydra prints its errors itself, over several lines, and exits 1; with HYDRA_FULL_ERROR
    set it raises them instead, so the command can say them in one line and exit 2."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def overrides_from_env() -> list[str]:
    raw = os.environ.get(ENV_OVERRIDES)
    if not raw:
        return []
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as err:
        refuse("workbench train", f"${ENV_OVERRIDES} is not a JSON list of overrides: {err}")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        refuse("workbench train", f"${ENV_OVERRIDES} must be a JSON list of strings")
    return overrides


def train_main(rest: list[str]) -> int:
    from workbench.sweep.files import check_sweep_overrides

    register_configs()
    rest = rest + overrides_from_env()
    sys.argv = [f"{sys.argv[0]} train", *rest]
    errors = _user_errors()
    with _hydra_errors_raised():
        try:
            check_sweep_overrides(rest)
            train_app()
        except errors as err:
            refuse("workbench train", one_line(err))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_main(rest)
    if command == "sweep":
        from workbench.sweep.cli import sweep_main
        return sweep_main(rest)
    if command == "reevaluate":
        from workbench.sweep.cli import reevaluate_main
        return reevaluate_main(rest)
    if command == "runs":
        from workbench.tracking.cli import runs_main
        return runs_main(rest)
    if command == "report":
        from workbench.analysis.cli import report_main
        return report_main(rest)
    print(f"workbench: error: unknown command {command!r}; commands: train, sweep, reevaluate, runs, report", file=sys.stderr)
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
