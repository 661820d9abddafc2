"""Pure planning and reconciliation: fairness, path resolution, per-file outcomes."""

from __future__ import annotations

import pytest

from balsam_tui.backends.base import FileCopy, FileOutcome, RemoteState, TaskStatus
from balsam_tui.engine.planning import PathProblem, allot_batches, resolve_copy
from balsam_tui.engine.reconcile import RetryPolicy, reconcile
from balsam_tui.locations import parse_location
from balsam_tui.store.records import ItemRecord, TaskRecord

BIG = ("in", "big")
SMALL = ("in", "small")
OUT = ("out", "archive")


def test_a_small_group_is_served_in_the_first_round_beside_a_huge_one() -> None:
    plan = allot_batches(
        {BIG: 1_000_000, SMALL: 3}, free_slots=2, batch_size=100, query_limit=2000
    )
    assert [(a.group, a.size) for a in plan] == [(BIG, 100), (SMALL, 3)]


def test_rounds_continue_after_the_group_served_last() -> None:
    pending = {BIG: 500, SMALL: 500, OUT: 500}
    first = allot_batches(pending, free_slots=1, batch_size=10, query_limit=100)
    second = allot_batches(
        pending, free_slots=1, batch_size=10, query_limit=100, after=first[-1].group
    )
    third = allot_batches(
        pending, free_slots=1, batch_size=10, query_limit=100, after=second[-1].group
    )
    fourth = allot_batches(
        pending, free_slots=1, batch_size=10, query_limit=100, after=third[-1].group
    )
    served = [p[0].group for p in (first, second, third, fourth)]
    assert served == [BIG, SMALL, OUT, BIG]


def test_free_slots_fill_with_several_batches_of_one_group_when_alone() -> None:
    plan = allot_batches({BIG: 250}, free_slots=5, batch_size=100, query_limit=2000)
    assert [a.size for a in plan] == [100, 100, 50]


def test_the_query_limit_caps_the_items_handed_out() -> None:
    plan = allot_batches(
        {BIG: 5000, SMALL: 5000}, free_slots=10, batch_size=100, query_limit=250
    )
    assert sum(a.size for a in plan) == 250


def test_no_free_slot_means_no_batch() -> None:
    assert allot_batches({BIG: 10}, free_slots=0, batch_size=5, query_limit=10) == []


def _item(**overrides) -> ItemRecord:
    values = dict(
        id=1,
        job_id=1,
        slot="s",
        direction="in",
        local_path="input.dat",
        remote_path="/remote/root/a.dat",
        location_alias="lab",
        recursive=False,
        state="active",
        task_id=1,
        attempts=0,
        retry_at=None,
        error="",
        permanent=False,
    )
    values.update(overrides)
    return ItemRecord(**values)


LAB = parse_location("lab", "local://localhost/remote/root")


def test_stage_in_copies_the_remote_file_into_the_workdir() -> None:
    copy = resolve_copy(_item(), "/site/data/job1", LAB)
    assert isinstance(copy, FileCopy)
    assert (copy.source, copy.destination) == (
        "/remote/root/a.dat",
        "/site/data/job1/input.dat",
    )
    assert (copy.source_root, copy.destination_root) == (
        "/remote/root",
        "/site/data/job1",
    )


def test_stage_in_onto_the_workdir_itself_keeps_the_file_name() -> None:
    copy = resolve_copy(_item(local_path="."), "/site/data/job1", LAB)
    assert isinstance(copy, FileCopy)
    assert copy.destination == "/site/data/job1/a.dat"


def test_stage_out_copies_the_other_way() -> None:
    item = _item(
        direction="out",
        local_path="out/result.json",
        remote_path="/remote/root/results/1.json",
    )
    copy = resolve_copy(item, "/site/data/job1", LAB)
    assert isinstance(copy, FileCopy)
    assert copy.source == "/site/data/job1/out/result.json"
    assert copy.destination == "/remote/root/results/1.json"
    assert copy.destination_root == "/remote/root"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"local_path": "../../etc/passwd"}, "leaves the job's workdir"),
        ({"remote_path": "/remote/root/../elsewhere/x"}, "outside location 'lab'"),
        ({"remote_path": "/remote/rootless/x"}, "outside location 'lab'"),
    ],
)
def test_a_path_escaping_its_directory_is_a_problem_of_that_item(
    overrides: dict, fragment: str
) -> None:
    result = resolve_copy(_item(**overrides), "/site/data/job1", LAB)
    assert isinstance(result, PathProblem)
    assert fragment in result.reason


def _task(**overrides) -> TaskRecord:
    values = dict(
        id=1,
        protocol="local",
        location_alias="lab",
        direction="in",
        state="active",
        submission_id="s-1",
        backend_task_id="b-1",
        label="t",
        item_count=3,
        remote_state="",
        files_done=0,
        files_failed=0,
        bytes_done=0,
        bytes_total=None,
        bytes_per_second=0.0,
        status_text="",
        error="",
        submit_attempts=1,
        next_attempt_at=None,
        cancel_reason="",
        created_at=0.0,
        submitted_at=0.0,
        finished_at=None,
        updated_at=0.0,
    )
    values.update(overrides)
    return TaskRecord(**values)


POLICY = RetryPolicy(limit=2, backoff=10, backoff_max=100)
ITEMS = [_item(id=1, job_id=1), _item(id=2, job_id=2), _item(id=3, job_id=3)]


def _by_id(settlement) -> dict[int, object]:
    return {u.item_id: u for u in settlement.updates}


def test_a_succeeded_task_fails_only_its_skipped_files() -> None:
    status = TaskStatus(
        1,
        RemoteState.SUCCEEDED,
        outcomes=(
            FileOutcome(2, ok=False, error="source not found: /x", permanent=True),
        ),
    )
    updates = _by_id(reconcile(_task(), ITEMS, status, POLICY, now=1000.0))
    assert [updates[i].state for i in (1, 2, 3)] == ["done", "error", "done"]
    assert updates[2].error == "source not found: /x"
    assert updates[2].permanent


def test_a_transient_failure_returns_to_pending_after_a_backoff() -> None:
    status = TaskStatus(
        1,
        RemoteState.SUCCEEDED,
        outcomes=(FileOutcome(1, ok=False, error="disk full", permanent=False),),
    )
    update = _by_id(reconcile(_task(), ITEMS, status, POLICY, now=1000.0))[1]
    assert (update.state, update.retry_at, update.attempts) == ("pending", 1010.0, 1)
    assert not update.keep_task


def test_backoff_doubles_and_the_limit_ends_automatic_retries() -> None:
    status = TaskStatus(
        1,
        RemoteState.SUCCEEDED,
        outcomes=(FileOutcome(1, ok=False, error="disk full", permanent=False),),
    )
    second = _by_id(reconcile(_task(), [_item(attempts=1)], status, POLICY, 0.0))[1]
    third = _by_id(reconcile(_task(), [_item(attempts=2)], status, POLICY, 0.0))[1]
    assert (second.state, second.retry_at) == ("pending", 20.0)
    assert third.state == "error" and "gave up after 3 attempts" in third.error
    assert not third.permanent


def test_a_failed_task_fails_its_unreported_items_with_the_fatal_error() -> None:
    status = TaskStatus(
        1,
        RemoteState.FAILED,
        fatal_error="deadline exceeded",
        outcomes=(FileOutcome(3, ok=True, bytes=10),),
    )
    settlement = reconcile(_task(), ITEMS, status, POLICY, now=0.0)
    updates = _by_id(settlement)
    assert updates[3].state == "done"
    assert updates[1].error == "deadline exceeded" and updates[1].state == "pending"
    assert settlement.task_fields["state"] == "failed"


def test_a_stuck_task_fails_the_bad_items_and_asks_for_a_cancel() -> None:
    status = TaskStatus(
        1,
        RemoteState.ACTIVE,
        stuck=True,
        status_text="FILE_NOT_FOUND",
        outcomes=(FileOutcome(2, ok=False, error="not found", permanent=True),),
    )
    settlement = reconcile(_task(), ITEMS, status, POLICY, now=0.0)
    assert settlement.cancel
    assert [(u.item_id, u.state) for u in settlement.updates] == [(2, "error")]
    assert not settlement.finished


def test_after_a_stuck_cancel_the_untransferred_items_go_back_to_pending() -> None:
    status = TaskStatus(1, RemoteState.CANCELLED, outcomes=(FileOutcome(1, ok=True),))
    task = _task(cancel_reason="stuck")
    updates = _by_id(reconcile(task, [ITEMS[0], ITEMS[2]], status, POLICY, now=0.0))
    assert updates[1].state == "done"
    assert updates[3].state == "pending" and updates[3].attempts == 0
    assert not updates[3].keep_task


def test_an_operator_cancel_leaves_retryable_errors() -> None:
    status = TaskStatus(1, RemoteState.CANCELLED)
    updates = reconcile(_task(cancel_reason="operator"), ITEMS, status, POLICY, 0.0)
    assert {(u.state, u.error, u.permanent) for u in updates.updates} == {
        ("error", "cancelled by the operator", False)
    }


def test_a_running_task_only_records_progress() -> None:
    status = TaskStatus(
        1, RemoteState.QUEUED, files_done=1, bytes_done=5, status_text="Queued"
    )
    settlement = reconcile(_task(), ITEMS, status, POLICY, now=0.0)
    assert settlement.updates == () and not settlement.finished
    assert settlement.task_fields["remote_state"] == "queued"
    assert settlement.task_fields["status_text"] == "Queued"
