"""One W&B run per training run, and a training loop that never dies of it.

Failures (online without network, bad entity, a crashed wandb-core service,
``log`` raising) are reported once on the ``workbench.tracking`` logger and
the run continues as an offline run into which every row logged so far is
replayed; ``Tracker.log`` never raises.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set

from ..metric_names import EVAL, INFO
from .config import LoggerConfig
from .reader import SUPERSEDED_MARKER, has_exit_record
from .rows import RowStore
from .secrets import scrub_secrets, scrub_text

log = logging.getLogger("workbench.tracking")

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
EVAL_RETURN = EVAL.episode_reward
# Fallback attempts per Tracker; past this, metrics stay in memory only.
MAX_RECOVERIES = 2
DEFAULT_BASE_URL = "https://api.wandb.ai"
# How long the reachability probe of the W&B server waits; a server that does not answer in time
# is left to wandb.init (and its init_timeout), only a refused connection is decided here.
PROBE_TIMEOUT_S = 2.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# run.finish() can return before wandb-core has flushed the file; readers right
# after training (tests, the sweeper) need it whole, so finish waits this long.
FLUSH_WAIT_S = 30.0


def resolve_mode(configured: str) -> str:
    """``WANDB_MODE`` wins over ``logger.mode`` when set."""
    raw = os.environ.get("WANDB_MODE") or configured or "offline"
    mode = _MODE_ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if mode not in MODES:
        source = "WANDB_MODE" if os.environ.get("WANDB_MODE") else "logger.mode"
        raise ValueError(f"{source}={raw!r}: expected one of {', '.join(MODES)}")
    return mode


def start_service(configured_mode: str) -> None:
    """Start this process's wandb-core now (a sweep worker, before its first trial), so the
    first run does not pay for it. Never raises: a run that cannot start reports that itself."""
    try:
        if resolve_mode(configured_mode) != "disabled":
            import wandb  # lazily, as everywhere here: a disabled run never imports it

            wandb.setup()
    except Exception as exc:  # noqa: BLE001
        log.debug("tracking: W&B service not started ahead (%s)", exc)


def _settings(mode: str, logger: LoggerConfig) -> Any:
    """Quiet, fast settings: no code/git/system snapshots, no stats sampler."""
    import wandb
    from wandb.sdk import wandb_run

    wanted: Dict[str, Any] = dict(
        mode=mode,
        silent=True,
        quiet=True,
        disable_code=True,
        save_code=False,
        disable_git=True,
        disable_job_creation=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        init_timeout=float(getattr(logger, "init_timeout", 60.0)),
        reinit="create_new",  # never touch another run in this process
        # Console capture only where we can scrub it (see Tracker._scrub_console).
        console="wrap" if hasattr(wandb_run.Run, "_console_raw_callback") else "off",
    )
    known = wandb.Settings.model_fields
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in known})


class ServerRefused(ConnectionError):
    """The W&B server refused the connection: going online cannot work, fall back at once."""


def check_server_accepts(base_url: Optional[str] = None) -> None:
    """Raise ServerRefused when nothing listens at the W&B server's address, so an online run falls
    back to offline at once instead of waiting its whole init_timeout. Through a proxy the
    direct address says nothing, so it is not probed."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return
    url = urlsplit(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    if not url.hostname:
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except ConnectionRefusedError:
        raise ServerRefused(f"the W&B server at {url.hostname}:{port} refused the connection") from None
    except OSError:  # slow or unresolvable: wandb.init decides, within init_timeout
        pass


def _run_dirs(wandb_dir: Path) -> Set[Path]:
    if not wandb_dir.is_dir():
        return set()
    return {p for p in wandb_dir.iterdir() if p.is_dir() and "run-" in p.name}


def _plain(config: Any) -> Dict[str, Any]:
    """Accept an OmegaConf DictConfig as well as a dict; wandb wants plain containers."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return dict(config)


class Tracker:
    """Lifecycle of the W&B run of one training run (see docs/tracking.md)."""

    def __init__(self, config: Mapping[str, Any], logger: LoggerConfig, output_dir: Path, step_metric: str, mode: str):
        self.config = scrub_secrets(_plain(config))
        self.logger = logger
        self.output_dir = Path(output_dir)
        self.step_metric = step_metric
        self.mode = mode  # the mode actually in use ("offline" after a fallback)
        self.run_id: Optional[str] = None
        self.run_dir: Optional[Path] = None
        self.failure: Optional[str] = None  # first failure, as reported
        self._run: Any = None
        self._rows = RowStore()
        self._summary: Dict[str, Any] = {}
        self._recoveries = 0
        self._finished = False
        self._t0 = time.monotonic()
        self._last_frames: Optional[float] = None
        self._final: Dict[str, float] = {}
        self._best: Dict[str, float] = {}
        self._dirs_before: Set[Path] = set()
        self._starter: Optional[threading.Thread] = None
        self._started_run: Any = None
        self._start_error: Optional[BaseException] = None

    # ------------------------------------------------------------------ API
    @classmethod
    def start(
        cls,
        config: Mapping[str, Any],
        logger: LoggerConfig,
        output_dir: Path,
        *,
        step_metric: str = INFO.frames,
        background: bool = False,
    ) -> "Tracker":
        """Start the run under ``<output_dir>/wandb/``. Never raises for W&B trouble.

        With ``background=True`` W&B starts in a thread (it takes about a second) while
        training goes on: rows logged meanwhile are kept and sent once the run is up, and
        ``run_id``/``run_dir`` are None until then (``finish`` always waits for it).
        """
        tracker = cls(config, logger, output_dir, step_metric, resolve_mode(logger.mode))
        if tracker.mode == "disabled":
            return tracker
        tracker.output_dir.mkdir(parents=True, exist_ok=True)
        tracker._dirs_before = _run_dirs(tracker.output_dir / "wandb")
        if background:
            tracker._starter = threading.Thread(target=tracker._start_in_background, name="wandb-start", daemon=True)
            tracker._starter.start()
            return tracker
        try:
            tracker._attach(tracker._init(tracker.mode))
        except Exception as exc:  # noqa: BLE001 - any W&B failure means: fall back
            tracker._recover(f"W&B could not start in {tracker.mode} mode", exc)
        return tracker

    @property
    def started(self) -> bool:
        """True once the W&B run is up (or given up on), so run_id and run_dir are final until a fallback."""
        self._adopt(wait=False)
        return self._starter is None

    def log(self, metrics: Mapping[str, float]) -> None:
        """Log one training iteration. Never raises."""
        try:
            row = dict(metrics)
            self._rows.append(row)
            self._track_returns(row)
        except Exception as exc:  # noqa: BLE001 - bad values must not stop training
            log.debug("tracking: could not record row: %s", exc)
            return
        if self._starter is not None:
            self._adopt(wait=False)  # either still starting (row kept) or just adopted (row replayed)
            return
        if self._run is None:
            return
        try:
            self._run.log(row)
        except Exception as exc:  # noqa: BLE001
            self._recover("W&B failed while logging", exc)

    def update_summary(self, values: Mapping[str, Any]) -> None:
        """Add values to the run summary (kept and re-applied after a fallback)."""
        values = scrub_secrets(dict(values))
        self._summary.update(values)
        if self._run is None:
            return
        try:
            self._run.summary.update(values)
        except Exception as exc:  # noqa: BLE001
            self._recover("W&B failed while updating the summary", exc)

    def finish(self, exit_code: int = 0) -> None:
        """Write the final summary and close the run. Idempotent, never raises."""
        if self._finished:
            return
        self._finished = True
        self._adopt(wait=True)
        self._summary.update(self.final_summary())
        while self._run is not None:
            run = self._run
            try:
                run.summary.update(self._summary)
                run.finish(exit_code=exit_code)
                self._wait_for_flush()
                return
            except Exception as exc:  # noqa: BLE001
                self._recover("W&B failed while finishing the run", exc)
                if self._run is run:
                    return

    def final_summary(self) -> Dict[str, Any]:
        """Each once: the last finite value of each return key under its own name (W&B's default,
        the last value logged, could be a NaN), its best as ``<key>_best``, total frames under the
        step metric, wall time."""
        out: Dict[str, Any] = {"wall_time_s": time.monotonic() - self._t0}
        if self._last_frames is not None:
            out[self.step_metric] = self._last_frames
        for key, value in self._final.items():
            out[key] = value
            out[f"{key}_best"] = self._best[key]
        return out

    @property
    def rows_logged(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------ internals
    def _wait_for_flush(self) -> None:
        files = sorted(self.run_dir.glob("*.wandb")) if self.run_dir else []
        if self.mode == "disabled" or not files:
            return
        deadline = time.monotonic() + FLUSH_WAIT_S
        delay = 0.005
        while not has_exit_record(files[0]):
            if time.monotonic() > deadline:
                log.debug("tracking: %s still has no exit record after %.0f s", files[0], FLUSH_WAIT_S)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _track_returns(self, row: Mapping[str, Any]) -> None:
        frames = row.get(self.step_metric)
        if isinstance(frames, (int, float)):
            self._last_frames = frames
        for key in (EVAL_RETURN, INFO.episode_reward):
            value = row.get(key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                self._final[key] = value
                self._best[key] = max(value, self._best.get(key, value))

    def _init(self, mode: str) -> Any:
        import wandb

        if mode == "online":
            check_server_accepts()
        lg = self.logger
        run = wandb.init(
            project=lg.project,
            entity=lg.entity,
            group=lg.group,
            tags=list(lg.tags or []),
            job_type=lg.job_type,
            name=lg.name,
            notes=lg.notes,
            config=self.config,
            dir=str(self.output_dir),
            settings=_settings(mode, lg),
        )
        self._scrub_console(run)
        run.define_metric(self.step_metric)
        run.define_metric("*", step_metric=self.step_metric)
        return run

    @staticmethod
    def _scrub_console(run: Any) -> None:
        """Mask secrets in captured stdout/stderr before they reach output.log.

        wandb's "wrap" console capture calls ``run._console_raw_callback`` by
        attribute lookup on every write, so an instance attribute filters it.
        """
        original = getattr(run, "_console_raw_callback", None)
        if original is None:
            return

        def scrubbed(name: str, data: str) -> None:
            original(name, scrub_text(data) if isinstance(data, str) else data)

        run._console_raw_callback = scrubbed

    def _start_in_background(self) -> None:
        try:
            self._started_run = self._init(self.mode)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which falls back
            self._start_error = exc

    def _adopt(self, wait: bool) -> None:
        """Take over a run started in the background and send it every row logged meanwhile."""
        starter = self._starter
        if starter is None or (starter.is_alive() and not wait):
            return
        starter.join()
        self._starter = None
        if self._start_error is not None:
            self._recover(f"W&B could not start in {self.mode} mode", self._start_error)  # replays the rows
            return
        self._attach(self._started_run)
        self._replay()

    def _attach(self, run: Any) -> None:
        self._run = run
        self.run_id = run.id
        try:
            self.run_dir = Path(run.settings.sync_dir)
        except Exception:  # noqa: BLE001
            self.run_dir = Path(run.dir).parent

    def _recover(self, what: str, exc: BaseException) -> None:
        """Report the failure once and continue in a fresh offline run."""
        broken, broken_dir = self._run, self.run_dir
        self._run = None
        if broken is not None:
            self._abandon(broken)
        reason = f"{what}: {type(exc).__name__}: {scrub_text(str(exc))}"
        self._recoveries += 1
        if self._recoveries > MAX_RECOVERIES:
            log.warning("%s; giving up on W&B, %d rows kept in memory only", reason, len(self._rows))
            self.mode = "failed"
            return
        fallback = self._start_fallback()
        if fallback is None:
            log.warning("%s; the offline fallback failed too, metrics kept in memory only", reason)
            self.mode = "failed"
            return
        old_id = self.run_id
        self._attach(fallback)
        self.mode = "offline"
        self._mark_superseded(broken_dir, old_id)
        where = self.run_dir
        if self.failure is None:
            self.failure = reason
        log.warning("%s; continuing in offline run %s at %s (%d rows replayed)", reason, self.run_id, where, len(self._rows))
        self._replay()

    def _abandon(self, run: Any) -> None:
        """Close a broken run as well as it allows; it may have no service left."""
        try:
            run.finish(exit_code=1)
        except Exception:  # noqa: BLE001
            try:
                run._console_stop()  # stop feeding console output to a dead run
            except Exception:  # noqa: BLE001
                pass

    def _start_fallback(self) -> Any:
        import wandb

        try:
            return self._init("offline")
        except Exception as first:  # noqa: BLE001
            log.debug("tracking: offline fallback failed (%s); restarting the W&B service", first)
        try:
            wandb.teardown()  # drops a dead service connection so init starts a new one
        except Exception:  # noqa: BLE001
            pass
        try:
            return self._init("offline")
        except Exception as second:  # noqa: BLE001
            log.debug("tracking: offline fallback failed again: %s", second)
            return None

    def _replay(self) -> None:
        run = self._run
        try:
            for row in self._rows:
                run.log(row)
            if self._summary:
                run.summary.update(self._summary)
        except Exception as exc:  # noqa: BLE001
            self._recover("W&B failed while replaying into the fallback run", exc)

    def _mark_superseded(self, broken_dir: Optional[Path], old_id: Optional[str]) -> None:
        """Tag runs left behind by the failure so readers pick the fallback run."""
        stale: List[Path] = [d for d in _run_dirs(self.output_dir / "wandb") - self._dirs_before if d != self.run_dir]
        if broken_dir is not None and broken_dir not in stale and broken_dir != self.run_dir:
            stale.append(broken_dir)
        note = {"fallback_run_id": self.run_id, "fallback_run_dir": str(self.run_dir), "replaced_run_id": old_id}
        for directory in stale:
            try:
                (directory / SUPERSEDED_MARKER).write_text(json.dumps(note))
            except OSError:
                pass
