"""A trial's job under submitit: time limit and preemption, and submitit's sacct noise.

**Requeue.** submitit runs every job with a handler on its preemption signal (``USR2``, or
``$SUBMITIT_PREEMPT_SIGNAL``), which SLURM sends ``signal_delay_s`` before the time limit and,
where the cluster sets ``preempt_send_user_signal``, on preemption. The handler calls the
callable's ``checkpoint`` method (hydra-submitit-launcher's returns a ``DelayedSubmission`` of
the launcher with the job's own arguments: the same overrides, so the same trial and output
directory), pickles it, requeues the job (``scontrol requeue``; the local executor exits 144 and
its controller starts the job again) and exits. Exiting in the middle of an iteration would
lose everything since the last periodic ``last.ckpt``, and would fail the trial.

So while a trial trains, ``RequeueGuard`` takes the signal instead: it only notes it. At the end
of the iteration the training raises ``JobRequeued``; the agent writes ``last.ckpt`` (it does
for any exception out of an iteration), the W&B run ends with ``trial/state: REQUEUED``, and
``RequeueGuard.requeue`` hands over to submitit's own handler, which requeues the job and exits.
The trial stays RUNNING (the sweeper beats for a queued job) and the requeued job resumes it
from its ``last.ckpt`` (``workbench.sweep.resume``).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)


class JobRequeued(BaseException):
    """Raised at the end of an iteration once the job got its time-limit or preemption signal.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way swallows it."""


def _preemption_signal() -> int | None:
    try:
        from submitit.core.job_environment import JobEnvironment
    except ImportError:
        return None
    try:
        return int(JobEnvironment._usr_sig())
    except RuntimeError:  # $SUBMITIT_PREEMPT_SIGNAL names no signal: submitit itself fails on it
        return None


class RequeueGuard:
    """Context manager: defers submitit's checkpoint-and-requeue to the end of an iteration.

    Inert outside a submitit job, off the main thread, where no handler is installed, or when
    not ``enabled`` (a training that does not check ``requested`` between iterations)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._sig: int | None = None
        self._handler: Any = None

    def __enter__(self) -> "RequeueGuard":
        if (not self.enabled or not os.environ.get("SUBMITIT_EXECUTOR")
                or threading.current_thread() is not threading.main_thread()):
            return self
        sig = _preemption_signal()
        handler = signal.getsignal(sig) if sig is not None else None
        if callable(handler):
            self._sig, self._handler = sig, handler
            signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._sig is not None:
            signal.signal(self._sig, self._handler)
            self._sig = None

    @property
    def active(self) -> bool:
        return self._handler is not None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum
        log.warning("got %s (time limit or preemption): the trial checkpoints at the end of this "
                    "iteration, then submitit requeues the job", signal.Signals(signum).name)

    def requeue(self, trial: Any) -> BaseException:
        """Hand the job to submitit's handler: it requeues the job and exits (SystemExit, raised
        through this call; the trial stays RUNNING). Returns the error if submitit refuses (it
        timed out ``max_num_timeout`` times already, or the launcher cannot checkpoint)."""
        try:
            trial.set_user_attr("requeues", int(trial.user_attrs.get("requeues", 0)) + 1)
        except Exception as exc:  # a storage hiccup must not stop the requeue
            log.warning("trial %d: requeue not recorded: %s", trial.number, exc)
        log.warning("trial %d: last.ckpt written; submitit requeues the job, the trial resumes from it",
                    trial.number)
        if self._handler is None:
            return RuntimeError("no submitit handler to requeue the job")
        try:
            self._handler(self.signum, None)
        except SystemExit:
            raise
        except Exception as exc:  # submitit's UncompletedJobError: not requeued
            return exc
        return RuntimeError("submitit did not requeue the job (not its first task)")


# -- submitit's sacct polling ------------------------------------------------------------

SACCT_NOISE = "Bypassing sacct error"
_ACCOUNTING = re.compile(r"^\s*AccountingStorageType\s*=\s*(\S+)", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def accounting_off() -> bool | None:
    """True when SLURM keeps no job accounting (``AccountingStorageType=accounting_storage/none``,
    so ``sacct`` can only fail), False when it does, None when ``scontrol`` cannot tell."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return None
    try:
        out = subprocess.run([scontrol, "show", "config"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    found = _ACCOUNTING.search(out.stdout or "")
    if out.returncode != 0 or found is None:
        return None
    return found.group(1).endswith("/none")


class QuietSacct(logging.Filter):
    """Drops submitit's ``Bypassing sacct error ..., status may be inaccurate`` warning, which
    its job watcher logs at every poll (every few seconds to a minute, per sweep thread) where
    SLURM accounting is off. Nothing is lost: submitit then follows a job by its result file,
    which is how it finds every job's end there anyway. Kept where accounting is on (or
    unknown), where a failing sacct is news. Said once, at INFO."""

    def __init__(self) -> None:
        super().__init__()
        self._told = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_NOISE not in record.getMessage() or accounting_off() is not True:
            return True
        if not self._told:
            self._told = True
            log.info("SLURM accounting is off (AccountingStorageType=accounting_storage/none): "
                     "submitit's sacct polls fail, it follows jobs by their result files")
        return False


def quiet_sacct() -> None:
    """Install ``QuietSacct`` on submitit's logger (once)."""
    logger = logging.getLogger("submitit")
    if not any(isinstance(f, QuietSacct) for f in logger.filters):
        logger.addFilter(QuietSacct())
