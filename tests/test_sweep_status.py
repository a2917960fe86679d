"""The sweep's status line: elapsed time and an ETA from the rate at which trials finish."""
from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from workbench.sweep.summary import format_duration, progress_line, summary_table

T0 = datetime(2026, 3, 1, 12, 0, 0)
STARTED = T0.timestamp()  # when the sweep started


def add(study, start: float | None, end: float | None, state=TrialState.COMPLETE, **attrs) -> None:
    """A trial that started ``start`` s and finished ``end`` s after the sweep started."""
    study.add_trial(FrozenTrial(
        number=0, state=state, value=1.0 if state == TrialState.COMPLETE else None,
        datetime_start=None if start is None else T0 + timedelta(seconds=start),
        datetime_complete=None if end is None else T0 + timedelta(seconds=end),
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs, system_attrs={},
        intermediate_values={}, trial_id=0))


@pytest.fixture
def study():
    return optuna.create_study(study_name="st", direction="maximize")


def test_eta_is_the_remaining_trials_at_the_rate_they_finished(study):
    # trials run from 10 s on (before: the sweep's start-up); 4 finished by 110 s: 25 s a trial
    add(study, -500, -400)  # of an earlier run of the sweep: not in this rate, but counts as done
    for end in (35, 60, 85, 110):
        add(study, 10, end)
    add(study, 100, None, TrialState.RUNNING)
    line = progress_line(study, n_trials=10, started=STARTED, now=STARTED + 110)
    # 10 - 5 finished = 5 to go, at 100 s / 4 trials = 25 s each: 125 s
    assert line.endswith("| elapsed 1m50s, ETA 2m05s"), line
    assert line.startswith("[st] 5/10 finished: 5 complete, 0 pruned, 0 failed, 1 running, 0 queued")


def test_retried_failures_count_for_neither_the_budget_nor_the_rate(study):
    add(study, 0, 20, TrialState.FAIL)  # trial 0: killed, then retried by trial 1
    add(study, 20, 40, retry_of=0)
    add(study, 0, 40)
    add(study, 0, 40, TrialState.FAIL, surplus=True)
    line = progress_line(study, n_trials=4, started=STARTED, now=STARTED + 40)
    assert line.endswith("| elapsed 40s, ETA 40s"), line  # 2 to go at 2 per 40 s


def test_no_eta_before_a_trial_finished_and_none_when_the_budget_is_done(study):
    add(study, 5, None, TrialState.RUNNING)
    assert progress_line(study, 3, STARTED, now=STARTED + 30).endswith("| elapsed 30s, ETA -")
    for _ in range(3):
        add(study, 5, 20)
    assert progress_line(study, 3, STARTED, now=STARTED + 4000).endswith("| elapsed 1h06m")
    assert progress_line(study, None, STARTED, now=STARTED + 30).endswith("| elapsed 30s")
    assert "elapsed" not in progress_line(study, 3)  # no start time: no timing
    assert summary_table(study, 3, started=STARTED).splitlines()[0].startswith("[st] 3/3 finished")


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"),
                                           (3600, "1h00m"), (7322, "2h02m"), (100000, "27h46m")])
def test_durations_read_at_a_glance(seconds, text):
    assert format_duration(seconds) == text
