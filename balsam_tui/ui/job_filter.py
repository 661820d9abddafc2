"""What the operator types after ``/`` in the Jobs pane, turned into a store query.

The language is a few words, in any order::

    ready                     a job state by its name (any case)
    state:READY,STAGED_IN     one or more job states
    alias:beamline            jobs with a transfer item at that location alias
    app:demo.reconstruct      jobs of that app
    item:error  (or: errors)  jobs with a transfer item in that state
    anything else             text found in the workdir, the app name or the tags

Parsing is pure and raises ``FilterError`` with a sentence naming the bad word.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from balsam_tui.states import ItemState, JobState
from balsam_tui.store.jobs import JobQuery

JOB_STATE_NAMES = {s.value for s in JobState}
ITEM_STATE_NAMES = {s.value for s in ItemState}
HINT = "state:READY  alias:NAME  app:NAME  item:error  or any text (Esc clears)"


class FilterError(ValueError):
    """The filter text cannot be understood; the message says which word and why."""


@dataclass(frozen=True)
class JobFilter:
    states: tuple[str, ...] = ()
    alias: str | None = None
    app: str | None = None
    item_state: str | None = None
    text: str | None = None

    @property
    def is_empty(self) -> bool:
        return self == JobFilter()

    @property
    def counted_by_state(self) -> bool:
        """Whether the per-state counters alone tell how many jobs match."""
        return (
            self.alias is None
            and self.app is None
            and not (self.item_state or self.text)
        )

    def query(self) -> JobQuery:
        return JobQuery(
            state=list(self.states) or None,
            app=self.app,
            alias=self.alias,
            text=self.text,
        )

    def describe(self) -> str:
        """The filter written back in the language it was typed in."""
        words = []
        if self.states:
            words.append("state:" + ",".join(self.states))
        if self.alias:
            words.append(f"alias:{self.alias}")
        if self.app:
            words.append(f"app:{self.app}")
        if self.item_state:
            words.append(f"item:{self.item_state}")
        if self.text:
            words.append(shlex.quote(self.text))
        return " ".join(words)


def parse_filter(typed: str) -> JobFilter:
    try:
        words = shlex.split(typed)
    except ValueError:
        words = typed.split()  # an unbalanced quote: take the words as they are
    states: list[str] = []
    alias = app = item_state = None
    text: list[str] = []
    for word in words:
        key, sep, value = word.partition(":")
        key = key.lower()
        if word.upper() in JOB_STATE_NAMES:
            states.append(word.upper())
        elif word.lower() in ("error", "errors", "failed-items"):
            item_state = ItemState.ERROR.value
        elif sep and key == "state":
            states.extend(_job_states(value))
        elif sep and key == "alias":
            alias = _non_empty(key, value)
        elif sep and key == "app":
            app = _non_empty(key, value)
        elif sep and key == "item":
            item_state = _item_state(value)
        else:
            text.append(word)
    return JobFilter(
        states=tuple(dict.fromkeys(states)),
        alias=alias,
        app=app,
        item_state=item_state,
        text=" ".join(text) or None,
    )


def _job_states(value: str) -> list[str]:
    states = [s.strip().upper() for s in value.split(",") if s.strip()]
    if not states:
        raise FilterError("state: needs a job state, e.g. state:READY")
    for state in states:
        if state not in JOB_STATE_NAMES:
            raise FilterError(
                f"{state!r} is not a job state (one of: "
                f"{', '.join(s.value for s in JobState)})"
            )
    return states


def _item_state(value: str) -> str:
    state = value.strip().lower()
    if state not in ITEM_STATE_NAMES:
        raise FilterError(
            f"{value!r} is not a transfer item state (one of: "
            f"{', '.join(s.value for s in ItemState)})"
        )
    return state


def _non_empty(key: str, value: str) -> str:
    if not value.strip():
        raise FilterError(f"{key}: needs a name, e.g. {key}:NAME")
    return value.strip()
