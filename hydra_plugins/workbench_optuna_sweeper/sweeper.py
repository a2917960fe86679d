"""The Hydra Sweeper: validates the sweep, opens the study, runs the driver's loop.

Each trial is one Hydra job launched with the configured launcher (basic: in this process;
submitit: a local or SLURM job). ``n_jobs`` > 1 runs that many launch loops in threads, each
launching one job at a time, so an out-of-process launcher runs trials asynchronously.
"""

import copy
import difflib
import importlib
import importlib.util
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from workbench.errors import one_line
from workbench.sweep.baseline import enqueue_baseline
from workbench.sweep.reevaluate import (BUDGET_KEYS, DEFAULT_TOP_K, REEVAL_ATTR, ReevalSettings, build_record,
                                        fresh_seeds, pick_configs, reeval_table, settings_dict,
                                        write_reeval_csv)
from workbench.sweep.driver import StudyDriver
from workbench.sweep.errors import StorageError, SweepConfigError
from workbench.sweep.factory import (ENV_WORKER, check_pruner, check_sampler, make_pruner, make_sampler,
                                     seed_sampler_for_worker)
from workbench.sweep.heartbeat import Heartbeat, HeartbeatSettings
from workbench.sweep.multiobjective import check_multi_objective, parse_objectives
from workbench.sweep.objective import ObjectiveSettings
from workbench.sweep.population_trials import (CONDITIONS_ATTR, SEARCH_SPACE_ATTR, check_population_sweep,
                                               run_population_jobs, structural_names)
from workbench.sweep.slurm import quiet_sacct
from workbench.sweep.space import SearchSpace, format_value, parse_search_space
from workbench.sweep.storage import (ENV_STORAGE, StorageSpec, budget_lock, check_storage, open_storage,
                                     resolve_storage)
from workbench.sweep.summary import progress_line, summary_csv_path, summary_table, write_csv
from workbench.tracking.secrets import scrub_secrets, scrub_text

log = logging.getLogger(__name__)


class WorkbenchOptunaSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = OmegaConf.create({k: v for k, v in conf.items() if not k.startswith("_")})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        _mask_launcher_lines()
        quiet_sacct()  # submitit's "Bypassing sacct error" at every poll where SLURM accounting is off
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- validation ------------------------------------------------------------------
    def _study_name(self) -> str:
        name = self.conf.get("study_name")
        if not name:
            choices = self.config.hydra.runtime.get("choices", {})
            name = choices.get("sweep") or self.config.hydra.job.name
        name = str(name).replace("/", "_")
        if not name or any(c.isspace() for c in name):
            raise SweepConfigError(f"hydra.sweeper.study_name {name!r}: must be non-empty, no spaces")
        return name

    def _check_paths(self, space: SearchSpace) -> None:
        """Every overridden key must exist in the composed config (``+key`` adds on purpose)."""
        for spec in space.params:
            if spec.prefix or "/" in spec.name or _has_key(self.config, spec.name):
                continue
            known = _flat_keys(self.config)
            close = difflib.get_close_matches(spec.name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SweepConfigError(
                f"hydra.sweeper.params.{spec.name}: no such key in the composed config{hint} "
                f"(write '+{spec.name}' to add a new key)"
            )

    def _check_composes(self, space: SearchSpace, extra: List[str]) -> DictConfig:
        """Compose a job at the search space's ends and at every categorical choice: catches
        wrong types, bad groups, schema violations before any trial starts. Returns one of
        them (fixed overrides applied), for the preload."""
        loader = self.hydra_context.config_loader
        check = self.conf.get("validate")
        if check:
            try:
                check_fn = get_method(str(check))
            except Exception as exc:
                raise SweepConfigError(f"hydra.sweeper.validate: cannot import {check!r}: {exc}") from exc
        for overrides in space.validation_points():
            try:
                composed = loader.load_sweep_config(self.config, overrides + extra)
            except Exception as exc:
                raise SweepConfigError(
                    f"the sweep does not compose with the overrides {overrides}: {one_line(exc)}"
                ) from exc
            if check:
                try:
                    check_fn(composed)
                except Exception as exc:
                    raise SweepConfigError(
                        f"{check} refuses the sweep's values {overrides}: {one_line(exc)}"
                    ) from exc
        return composed

    def _defaults_job(self, space: SearchSpace, trial_keys: List[str]) -> DictConfig:
        """The job composed with the fixed overrides only: what the config has without a search."""
        return self.hydra_context.config_loader.load_sweep_config(self.config, space.overrides({}) + trial_keys)

    # -- the sweep -------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        conf = self.conf
        _check_sweeper_keys(self.config)
        params = dict(OmegaConf.to_container(conf.params, resolve=False) or {})
        for arg in arguments:  # command-line overrides: searched if sweep syntax, else fixed
            key, _, value = arg.partition("=")
            params[key] = value
        space = parse_search_space(params, conf.get("conditions"))
        if not space.searched:
            raise SweepConfigError("hydra.sweeper.params: nothing to search")
        objective = ObjectiveSettings.from_config(OmegaConf.to_container(conf.objective, resolve=True))
        n_trials = int(conf.n_trials)
        if n_trials < 1:
            raise SweepConfigError(f"hydra.sweeper.n_trials must be >= 1, got {n_trials}")
        objectives = parse_objectives(_plain_direction(conf.direction), OmegaConf.to_container(conf.objective))
        directions = list(objectives.directions)
        sampler_node, seed_note = seed_sampler_for_worker(conf.get("sampler"), _worker_index())
        sampler = make_sampler(sampler_node)
        pruner = make_pruner(conf.get("pruner"))
        check_sampler(sampler, [p.name for p in space.searched])
        check_pruner(pruner, objective.seeds)
        check_multi_objective(objectives, sampler, pruner, objective.seeds)
        population = int(conf.population)
        check_population_sweep(population, space, objectives)
        reeval = ReevalSettings.from_config(OmegaConf.to_container(conf.reevaluate, resolve=True))
        study_name = self._study_name()
        base_dir = Path(self.config.hydra.runtime.cwd)
        spec = resolve_storage(conf.get("storage"), study_name, base_dir, str(conf.storage_dir))
        self._check_paths(space)
        self._check_preload()
        trial_keys = self._trial_overrides(study_name, spec, 0)
        job_config = self._check_composes(space, trial_keys)

        check_storage(spec)
        os.environ[ENV_STORAGE] = spec.url  # jobs (and their children) reach the study by it
        try:
            study = optuna.create_study(
                study_name=study_name,
                storage=open_storage(spec),
                sampler=sampler,
                pruner=pruner,
                directions=directions,
                load_if_exists=True,
            )
        except Exception as exc:  # e.g. a journal file that is not one, a database that refuses us
            raise StorageError(f"storage {spec.redacted}: cannot open the study: {one_line(exc)}") from None
        existing = [d.name.lower() for d in study.directions]
        if existing != directions:
            raise SweepConfigError(
                f"study {study_name!r} exists with direction {_directions_text(existing)}; "
                f"this sweep asks for {_directions_text(directions)}: use another study_name"
            )
        study.set_user_attr("objective_metrics", list(objectives.metrics))  # the report's axis labels
        study.set_user_attr(SEARCH_SPACE_ATTR, scrub_secrets({k: str(v) for k, v in params.items()}))
        # a population job samples its trials itself, from these
        conditions = conf.get("conditions")
        study.set_user_attr(CONDITIONS_ATTR, OmegaConf.to_container(conditions, resolve=True) if conditions else {})
        study.set_user_attr("n_trials", n_trials)  # `workbench sweep` judges its exit code by it
        study.set_user_attr("reevaluate", settings_dict(reeval))
        study.set_user_attr("invocation", self._invocation(arguments))  # what `workbench reevaluate` reruns
        if conf.get("baseline", True) and enqueue_baseline(study, spec, space, self._defaults_job(space, trial_keys)):
            _say(f"trial 0 of study {study_name} is the baseline: the untuned defaults")
        heartbeat = HeartbeatSettings(**OmegaConf.to_container(conf.heartbeat, resolve=True))
        driver = StudyDriver(study, spec, space, n_trials, heartbeat, bool(conf.wait_for_running), _say)
        _say(f"study {study_name} on {spec.redacted}: {n_trials} trials, "
             f"{len(space.searched)} searched parameters, sampler {type(sampler).__name__}, "
             f"pruner {type(pruner).__name__}" + (f", objectives {_objectives_text(objectives)}"
                                                  if objectives.multi else "")
             + (f", {population} trials side by side per job" if population > 1 else ""))
        if seed_note:
            _say(seed_note)
        if conf.dry_run:
            if reeval.top_k:  # composed now, so a budget that cannot be found fails before any trial
                budget = reeval.budget or self._own_budget(space)
                which = "the Pareto front" if objectives.multi else f"top {reeval.top_k}"
                _say(f"re-evaluation when the budget is spent: {which} and the defaults, "
                     f"{reeval.seeds} fresh seeds each, {budget} frames")
            _say("dry run: the sweep is valid; no trial started")
            return None
        if conf.reevaluate_only:
            self._reevaluate(study, space, spec, reeval)
            return None

        slots = self._slots()
        in_process = slots == 1 and _is_basic(self.launcher)
        if in_process:  # jobs of other launchers start elsewhere: nothing to warm up here
            self._preload(job_config)

        def launch(number: int, sampled: dict) -> Any:
            overrides = space.overrides(sampled) + self._trial_overrides(study_name, spec, number)
            if in_process:  # the job beats for itself; it dies with this process anyway
                (ret,) = self.launcher.launch([overrides], initial_job_idx=number)
            else:  # an out-of-process job may wait in a queue: beat for it meanwhile
                with Heartbeat(study._storage, driver.trial(number)._trial_id, heartbeat.interval):
                    (ret,) = self.launcher.launch([overrides], initial_job_idx=number)
            return ret.return_value  # re-raises the job's exception, if any

        def launch_population(token: str, index: int) -> Any:
            overrides = space.overrides({}) + self._population_overrides(study_name, spec, token, population)
            (ret,) = self.launcher.launch([overrides], initial_job_idx=index)
            return ret.return_value

        loop = (driver.run if population == 1 else
                lambda launcher, stopped: run_population_jobs(driver, launch_population, stopped))
        stop = threading.Event()
        try:
            if slots == 1:
                loop(launch, stop)
            else:
                with ThreadPoolExecutor(slots, thread_name_prefix="sweep-slot") as pool:
                    for future in [pool.submit(loop, launch, stop) for _ in range(slots)]:
                        future.result()
            if reeval.top_k and self._claims_reevaluation(study, spec, n_trials):
                self._reevaluate(study, space, spec, reeval)
        finally:
            stop.set()
            if os.environ.get(ENV_WORKER) is None:  # a `workbench sweep` worker: its parent prints the summary
                _say(summary_table(study, n_trials, started=driver.started) if conf.print_summary
                     else progress_line(study, n_trials, driver.started))
            if conf.summary_csv:
                path = write_csv(study, _summary_path(spec, study_name, self.config))
                _say(f"summary written to {path}")
        return None

    # -- re-evaluation on fresh seeds ------------------------------------------------------
    def _invocation(self, arguments: List[str]) -> List[str]:
        """The overrides that make this sweep (task and hydra ones), secrets masked."""
        hydra_overrides = [str(o) for o in self.config.hydra.overrides.get("hydra", [])]
        skip = ("hydra.sweeper.dry_run=", "hydra.sweeper.reevaluate_only=")
        return [scrub_text(o) for o in [*arguments, *hydra_overrides] if not o.startswith(skip)]

    def _claims_reevaluation(self, study: optuna.Study, spec: StorageSpec, n_trials: int) -> bool:
        """At the end of a `-m` sweep: once per study, by the first worker to finish, and only
        when the budget is spent. `workbench sweep` re-evaluates in its parent, not in a worker."""
        from workbench.sweep.cli import budget_reached

        if os.environ.get(ENV_WORKER) is not None or not budget_reached(study, n_trials):
            return False
        with budget_lock(spec, study.study_name):
            if study.user_attrs.get("reevaluation_claimed"):
                return False
            study.set_user_attr("reevaluation_claimed", True)
        return True

    def _fixed(self, space: SearchSpace, params: dict | None = None, drop: tuple = ()) -> List[str]:
        keep = SearchSpace([p for p in space.params if p.name not in drop])
        return keep.overrides(params or {})

    def _own_budget(self, space: SearchSpace) -> int:
        """agent.training_max_steps of the config without the sweep file and its budget overrides."""
        base = self._fixed(space, drop=("sweep", *BUDGET_KEYS))
        # without the sweep file the sweeper is Hydra's basic one: the command line's
        # hydra.sweeper.* overrides would not compose, and do not touch the budget
        master = copy.deepcopy(self.config)
        with open_dict(master):
            master.hydra.overrides.hydra = [o for o in master.hydra.overrides.hydra
                                            if not str(o).lstrip("+").startswith("hydra.sweeper.")]
        composed = self.hydra_context.config_loader.load_sweep_config(master, base)
        return int(composed.agent.training_max_steps)

    def _reevaluate(self, study: optuna.Study, space: SearchSpace, spec: StorageSpec, settings: ReevalSettings) -> None:
        configs = pick_configs(study, settings.top_k or DEFAULT_TOP_K, settings.baseline)
        if not configs:
            _say("re-evaluation: no complete trial to re-evaluate")
            return
        structural = structural_names(name for t in configs for name in t.params)
        budget = settings.budget or self._own_budget(space)
        seeds = [fresh_seeds(j, settings.seeds) for j in range(len(configs))]
        # one population for everything, unless a searched knob shapes the computation
        groups = [[j] for j in range(len(configs))] if structural else [list(range(len(configs)))]
        _say(f"re-evaluation of study {study.study_name}: trials {[t.number for t in configs]} on "
             f"{settings.seeds} fresh seeds each, {budget} frames, {len(groups)} population(s)"
             + (f" ({', '.join(structural)} cannot vary per member)" if structural else ""))
        values: list = [None] * len(configs)
        for g, group in enumerate(groups):
            overrides = self._reeval_overrides(space, study.study_name, configs, seeds, group, budget, g, bool(structural))
            (ret,) = self.launcher.launch([overrides], initial_job_idx=g)
            got = list(ret.return_value)
            for k, j in enumerate(group):
                values[j] = got[k * settings.seeds:(k + 1) * settings.seeds]
        record = build_record(study, configs, values, seeds, budget, structural)
        study.set_user_attr(REEVAL_ATTR, record)
        path = write_reeval_csv(record, reeval_csv_path(_summary_path(spec, study.study_name, self.config)))
        if self.conf.print_summary:
            _say(reeval_table(record))
        _say(f"re-evaluation written to {path} and to the study (user attr {REEVAL_ATTR!r})")

    def _reeval_overrides(self, space, study_name, configs, seeds, group, budget, index, structural) -> List[str]:
        members, member_seeds = [], []
        for j in group:
            for seed in seeds[j]:
                member = {} if structural else dict(configs[j].params)  # per-member knobs
                member["logger.name"] = f"{study_name}-reeval-t{configs[j].number}-seed{seed}"
                members.append(member)
                member_seeds.append(seed)
        params = configs[group[0]].params if structural else {}
        name = format_value(study_name)
        return [*self._fixed(space, params, drop=BUDGET_KEYS), f"agent.training_max_steps={budget}",
                f"++population.seeds=[{','.join(map(str, member_seeds))}]", "++population.size=null",
                f"++population.name={format_value(f'{study_name}-reeval')}",
                "++population.members=[" + ",".join(_member_text(m) for m in members) + "]",
                f"++trial.study_name={name}", "++trial.reevaluate=true", f"++logger.group={name}",
                "++logger.job_type=reevaluation", f"hydra.sweep.subdir=reeval_{index}"]

    def _preload_entries(self) -> List[tuple]:
        """``hydra.sweeper.preload`` as (entry, module, function or "")."""
        entries = []
        for entry in map(str, self.conf.get("preload") or []):
            module, _, function = entry.partition(":")
            entries.append((entry, module, function))
        return entries

    def _check_preload(self) -> None:
        """Cheap (the module is found, not imported): the dry run that validates a sweep stays fast."""
        for entry, module, function in self._preload_entries():
            try:
                found = bool(module) and importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found or (":" in entry and not function.isidentifier()):
                raise SweepConfigError(f"hydra.sweeper.preload: {entry!r} is not an importable "
                                       "'module' or 'module:function'")

    def _preload(self, job_config: DictConfig) -> None:
        for entry, module, function in self._preload_entries():
            try:
                loaded = importlib.import_module(module)
                if function:
                    getattr(loaded, function)(job_config)
            except Exception as exc:
                raise SweepConfigError(f"hydra.sweeper.preload: {entry!r} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc

    def _slots(self) -> int:
        n_jobs = int(self.conf.n_jobs)
        if n_jobs < 1:
            raise SweepConfigError(f"hydra.sweeper.n_jobs must be >= 1, got {n_jobs}")
        if n_jobs > 1 and _is_basic(self.launcher):
            log.warning("hydra.sweeper.n_jobs=%d needs an out-of-process launcher (e.g. "
                        "hydra/launcher=submitit_local); running one job at a time. "
                        "For parallel local workers use `workbench sweep --workers N`.", n_jobs)
            return 1
        return n_jobs

    def _population_overrides(self, study_name: str, spec: StorageSpec, token: str, size: int) -> list[str]:
        """A population job's: it reserves its trials itself; its members write <sweep dir>/<trial>."""
        name = format_value(study_name)
        return [f"++trial.study_name={name}", f"++trial.storage={format_value(spec.redacted)}",
                f"++trial.population_worker={token}", f"++trial.population_size={size}",
                f"++logger.group={name}", "++logger.job_type=sweep-trial", f"hydra.sweep.subdir=population-{token}"]

    def _trial_overrides(self, study_name: str, spec: StorageSpec, number: int) -> list[str]:
        name = format_value(study_name)
        return [
            f"++trial.study_name={name}",
            f"++trial.number={number}",
            f"++trial.storage={format_value(spec.redacted)}",
            f"++logger.group={name}",
            f"++logger.name={format_value(f'{study_name}-{number}')}",  # the trial's W&B run: <study>-<n>
            "++logger.job_type=sweep-trial",
        ]


def _plain_direction(node: Any) -> Any:
    return OmegaConf.to_container(node) if isinstance(node, ListConfig) else node


def _objectives_text(objectives: Any) -> str:
    return ", ".join(f"{m} ({d})" for m, d in zip(objectives.metrics, objectives.directions))


def _directions_text(directions: List[str]) -> str:
    return directions[0] if len(directions) == 1 else f"[{', '.join(directions)}]"


def _worker_index() -> int | None:
    raw = os.environ.get(ENV_WORKER)
    return int(raw) if raw and raw.isdigit() else None
class _ScrubSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub_text(record.getMessage()), None
        return True


# Launchers log each job's overrides ("#3 : agent.e_clip=0.2 +extra.url=..."), passwords included.
_LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher",
                     "hydra_plugins.hydra_submitit_launcher.submitit_launcher")


def _mask_launcher_lines() -> None:
    for name in _LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ScrubSecrets) for f in logger.filters):
            logger.addFilter(_ScrubSecrets())


def _check_sweeper_keys(config: DictConfig) -> None:
    """``+hydra.sweeper.n_trails=99`` (a typo Hydra lets through with ``+``) would be ignored:
    refuse keys the sweeper's schema does not declare, with a did-you-mean."""
    from workbench.config import ConfigError, check_known_keys

    try:
        check_known_keys(config.hydra.sweeper, "hydra.sweeper.")
    except ConfigError as err:
        raise SweepConfigError(str(err)) from None


def _is_basic(launcher: Any) -> bool:
    return type(launcher).__name__ == "BasicLauncher"


def _summary_path(spec: StorageSpec, study_name: str, config: DictConfig) -> Path:
    return summary_csv_path(spec.path, study_name, str(config.hydra.sweep.dir), Path(str(config.hydra.runtime.cwd)))


def _member_text(member: dict) -> str:
    return "{" + ",".join(f"{key}:{format_value(value)}" for key, value in member.items()) + "}"


def reeval_csv_path(summary_csv: Path) -> Path:
    return summary_csv.with_name(summary_csv.name.replace(".summary.csv", ".reeval.csv"))


def _say(text: str) -> None:
    # printed, not logged: after the first in-process job Hydra's logging writes to that job's file
    print(text, file=sys.stdout, flush=True)


def _has_key(config: Any, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if isinstance(node, DictConfig):
            if part not in node.keys():
                return False
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def _flat_keys(config: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in config.keys():
        if not prefix and key == "hydra":
            continue
        full = f"{prefix}{key}"
        keys.append(full)
        child = config._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys.extend(_flat_keys(child, full + "."))
    return keys
