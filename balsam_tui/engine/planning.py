"""Pure planning: which groups get the free task slots, and where each file goes.

Groups are (direction, location alias) pairs. Slots go round-robin, one batch per
group per round, and the round starts after the group served last in the previous
cycle; so a group with three files is served as often as one with a million, and
no group waits more than one round while others hold pending work.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from balsam_tui.backends.base import FileCopy
from balsam_tui.locations import Location, inside, is_normal
from balsam_tui.states import Direction
from balsam_tui.store.records import ItemRecord

Group = tuple[str, str]


@dataclass(frozen=True)
class Allotment:
    group: Group
    size: int


def allot_batches(
    pending: Mapping[Group, int],
    *,
    free_slots: int,
    batch_size: int,
    query_limit: int,
    after: Group | None = None,
) -> list[Allotment]:
    """Share ``free_slots`` batches among groups fairly, in serving order.

    ``pending`` counts the items each group could send now; at most ``query_limit``
    items are handed out in all.
    """
    groups = sorted(g for g, n in pending.items() if n > 0)
    if not groups or free_slots <= 0 or query_limit <= 0:
        return []
    if after is not None:
        start = next((i for i, g in enumerate(groups) if g > after), 0)
        groups = groups[start:] + groups[:start]

    left = {g: pending[g] for g in groups}
    budget = query_limit
    allotments: list[Allotment] = []
    while len(allotments) < free_slots and budget > 0 and any(left.values()):
        for group in groups:
            if len(allotments) == free_slots or budget == 0:
                break
            size = min(batch_size, left[group], budget)
            if size <= 0:
                continue
            allotments.append(Allotment(group, size))
            left[group] -= size
            budget -= size
    return allotments


@dataclass(frozen=True)
class PathProblem:
    item_id: int
    reason: str


def resolve_copy(
    item: ItemRecord, workdir: str, location: Location
) -> FileCopy | PathProblem:
    """Both ends of one item's copy, or why it may not be made.

    ``workdir`` is the job's absolute work directory on this machine. Stage-in copies
    the remote file into the workdir (a file landing on the workdir itself keeps its
    own name); stage-out copies the other way. Only the lexical check happens here;
    backends check again with symlinks resolved, at copy time.
    """
    workdir = _normal(workdir)
    remote = _normal(item.remote_path)
    local = (
        workdir if item.local_path == "." else _normal(f"{workdir}/{item.local_path}")
    )
    if not inside(local, workdir):
        return PathProblem(
            item.id, f"local path {item.local_path!r} leaves the job's workdir"
        )
    if not inside(remote, location.root):
        return PathProblem(
            item.id,
            f"{item.remote_path} lies outside location {location.alias!r} "
            f"(root {location.root})",
        )
    if item.direction == Direction.IN:
        if local == workdir and not item.recursive:
            local = posixpath.join(workdir, posixpath.basename(remote))
        return FileCopy(
            item_id=item.id,
            source=remote,
            destination=local,
            source_root=location.root,
            destination_root=workdir,
            recursive=item.recursive,
        )
    if local == workdir and not item.recursive:
        return PathProblem(
            item.id,
            "stage-out of the whole workdir needs a recursive slot",
        )
    return FileCopy(
        item_id=item.id,
        source=local,
        destination=remote,
        source_root=workdir,
        destination_root=location.root,
        recursive=item.recursive,
    )


def _normal(path: str) -> str:
    return path if is_normal(path) else posixpath.normpath(path)


def plan_label(site_name: str) -> str:
    """The label prefix of every task of a site, e.g. ``balsam-tui theta-site``."""
    cleaned = "".join(c if c.isalnum() or c in "-_ ." else "-" for c in site_name)
    return f"balsam-tui {cleaned}"[:100]
