"""Scheduled-job records: one run of a job, and what is known of a job overall."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Outcome = Literal["ok", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
JOB_ID_LEN = 64


@dataclass(frozen=True, slots=True)
class JobRun:
    """One run; ``skipped`` when another process held the job's lock.

    Times are epoch ms; ``next_run_at`` is when the recording scheduler meant
    to run the job next, as it saw it at the end of this run.
    """

    job_id: str
    owner: str
    started_at: int
    finished_at: int
    outcome: Outcome
    error: str | None = None
    next_run_at: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if not self.job_id or len(self.job_id) > JOB_ID_LEN:
            raise ValueError(f"job id must be 1..{JOB_ID_LEN} characters")


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's newest run (any outcome) and its last success; all None: never ran."""

    job_id: str
    last_started_at: int | None = None
    last_finished_at: int | None = None
    outcome: Outcome | None = None
    error: str | None = None
    next_run_at: int | None = None
    last_ok_at: int | None = None
    owner: str | None = None
