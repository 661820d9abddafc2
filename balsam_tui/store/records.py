"""Immutable views of the store's rows: what queries hand to the engine, API and UI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Slot:
    """A transfer slot of an app: where one file of a job comes from or goes to."""

    name: str
    direction: str
    local_path: str
    required: bool = False
    description: str = ""
    recursive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "local_path": self.local_path,
            "required": self.required,
            "description": self.description,
            "recursive": self.recursive,
        }


@dataclass(frozen=True)
class AppRecord:
    id: int
    name: str
    description: str
    slots: Mapping[str, Slot]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AppRecord:
        raw = json.loads(row["slots"])
        slots = {name: Slot(name=name, **spec) for name, spec in raw.items()}
        return cls(row["id"], row["name"], row["description"], slots)


@dataclass(frozen=True)
class JobRecord:
    id: int
    workdir: str
    app_id: int
    app_name: str
    state: str
    state_reason: str
    tags: Mapping[str, str]
    parents: tuple[int, ...]
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row, parents: tuple[int, ...] = ()) -> JobRecord:
        return cls(
            id=row["id"],
            workdir=row["workdir"],
            app_id=row["app_id"],
            app_name=row["app_name"],
            state=row["state"],
            state_reason=row["state_reason"],
            tags=json.loads(row["tags"]),
            parents=parents,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class ItemRecord:
    """A transfer item: one filled slot of one job."""

    id: int
    job_id: int
    slot: str
    direction: str
    local_path: str
    remote_path: str
    location_alias: str
    recursive: bool
    state: str
    task_id: int | None
    attempts: int
    retry_at: float | None
    error: str
    permanent: bool
    transfer_info_json: str = "{}"
    updated_at: float = 0.0

    @cached_property
    def transfer_info(self) -> Mapping[str, Any]:
        """Attempts, bytes, the last error and a short history, as a dict.

        Parsed on first use: the engine reads thousands of items per cycle and
        never looks at this.
        """
        return json.loads(self.transfer_info_json)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ItemRecord:
        return cls(
            row["id"],
            row["job_id"],
            row["slot"],
            row["direction"],
            row["local_path"],
            row["remote_path"],
            row["location_alias"],
            bool(row["recursive"]),
            row["state"],
            row["task_id"],
            row["attempts"],
            row["retry_at"],
            row["error"],
            bool(row["permanent"]),
            row["transfer_info"],
            row["updated_at"],
        )


@dataclass(frozen=True)
class TaskRecord:
    """A transfer task: one batch submitted to a backend, with its progress."""

    id: int
    protocol: str
    location_alias: str
    direction: str
    state: str
    submission_id: str
    backend_task_id: str | None
    label: str
    item_count: int
    remote_state: str
    files_done: int
    files_failed: int
    bytes_done: int
    bytes_total: int | None
    bytes_per_second: float
    status_text: str
    error: str
    submit_attempts: int
    next_attempt_at: float | None
    cancel_reason: str
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRecord:
        return cls(**{name: row[name] for name in row.keys()})


@dataclass(frozen=True)
class JournalEntry:
    id: int
    ts: float
    kind: str
    job_id: int | None
    item_id: int | None
    task_id: int | None
    message: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JournalEntry:
        return cls(**{name: row[name] for name in row.keys()})
