"""Immutable pictures of the engine, published after each cycle for whoever displays it.

A snapshot holds only what is cheap to gather whatever the size of the store: the
state counters, the tasks in flight and a few recent ones, the last journal entries.
Pages of jobs or items are read from the store by the display itself, on demand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from balsam_tui.states import StrEnum
from balsam_tui.store.records import JournalEntry, TaskRecord


class EngineStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    TRANSFERS_OFF = "transfers off"
    STOPPED = "stopped"


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class EngineSnapshot:
    taken_at: float
    site: str
    status: EngineStatus
    cycle: int = 0
    cycle_seconds: float = 0.0
    item_counts: Mapping[tuple[str, str], int] = field(
        default_factory=lambda: _frozen({})
    )
    job_counts: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    tasks: tuple[TaskRecord, ...] = ()
    events: tuple[JournalEntry, ...] = ()
    problems: tuple[str, ...] = ()
    bytes_per_second: float = 0.0

    def items(self, *, direction: str | None = None, state: str | None = None) -> int:
        return sum(
            n
            for (d, s), n in self.item_counts.items()
            if (direction is None or d == direction) and (state is None or s == state)
        )

    @property
    def tasks_in_flight(self) -> tuple[TaskRecord, ...]:
        return tuple(t for t in self.tasks if t.finished_at is None)

    def summary(self) -> str:
        """One line for a log: engine state, items by direction and state, jobs."""
        parts = [f"{self.status}", f"cycle {self.cycle}"]
        for direction in ("in", "out"):
            counts = {
                s: n for (d, s), n in sorted(self.item_counts.items()) if d == direction
            }
            if counts:
                shown = " ".join(f"{s}={n}" for s, n in counts.items() if n)
                parts.append(f"{direction}: {shown}")
        parts.append(f"tasks in flight: {len(self.tasks_in_flight)}")
        if self.job_counts:
            jobs = " ".join(f"{s}={n}" for s, n in sorted(self.job_counts.items()) if n)
            parts.append(f"jobs: {jobs}")
        if self.problems:
            parts.append(f"problems: {len(self.problems)}")
        return " | ".join(parts)
