"""The names of job, transfer item and transfer task states.

Job states keep Balsam's names so that scripts written for Balsam read the same here.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A string enum that prints as its value (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class JobState(StrEnum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    POSTPROCESSED = "POSTPROCESSED"
    STAGED_OUT = "STAGED_OUT"
    JOB_FINISHED = "JOB_FINISHED"
    FAILED = "FAILED"


class ItemState(StrEnum):
    AWAITING_JOB = "awaiting_job"
    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"
    DONE = "done"
    ERROR = "error"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class TaskState(StrEnum):
    """A transfer task's life as this tool sees it.

    ``submitting`` is written before the backend is called; a task still in it after
    a crash is submitted again with the same submission id.
    """

    SUBMITTING = "submitting"
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


IN_FLIGHT_TASK_STATES = (TaskState.SUBMITTING, TaskState.ACTIVE)
