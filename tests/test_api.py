"""The Python API against a real site: apps, jobs, every refusal, states, queries."""

from __future__ import annotations

import time

import pytest

from balsam_tui.api import App, Job, TransferItem
from balsam_tui.site import Site
from balsam_tui.states import Direction, ItemState, JobState
from balsam_tui.store import Database, NotFound, ValidationError
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.tasks import ItemUpdate

pytestmark = pytest.mark.usefixtures("api_site")

SIM = "sim.MySimulation"
SIM_SLOTS = {
    "input_file": {"direction": "in", "local_path": "input.nw", "required": True},
    "extra": {"direction": "in", "local_path": "extra/params.json"},
    "result": {"direction": "out", "local_path": "job.out", "required": True},
}


def at(site: Site, location: str, relative: str) -> str:
    """An absolute path inside one of the fixture site's locations."""
    return f"{site.root.parent / location}/{relative}"


def ref(site: Site, location: str, relative: str) -> str:
    return f"{location}:{at(site, location, relative)}"


def sim_transfers(site: Site, n: int = 1) -> dict[str, object]:
    return {
        "input_file": ref(site, "laptop", f"in/{n}.dat"),
        "result": ref(site, "archive", f"out/{n}.json"),
    }


@pytest.fixture
def sim(api_site: Site) -> str:
    App.objects.create(name=SIM, transfers=SIM_SLOTS)
    App.objects.create(
        name="post", transfers={"result": {"direction": "out", "local_path": "r.txt"}}
    )
    App.objects.create(
        name="pre", transfers={"data": {"direction": "in", "local_path": "d.txt"}}
    )
    App.objects.create(name="bare")
    return SIM


def store(site: Site) -> Database:
    """A second, independent connection to the site's store, as another process has."""
    return Database(site.store_path)


def item_states(job: Job) -> dict[str, str]:
    return {item.slot: item.state for item in job.items()}


# -- apps ---------------------------------------------------------------------------


def test_app_keeps_its_slots_with_defaults_filled_in(sim: str) -> None:
    app = App.objects.get(sim)

    assert set(app.slots) == {"input_file", "extra", "result"}
    assert app.slots["input_file"].direction == "in"
    assert app.slots["input_file"].required is True
    assert app.slots["extra"].local_path == "extra/params.json"
    assert app.slots["extra"].required is False
    assert app.slots["result"].description == ""
    assert app.slots["result"].recursive is False


def test_creating_an_app_again_replaces_its_slots(sim: str) -> None:
    App.objects.create(
        name=SIM, transfers={"only": {"direction": "in", "local_path": "x"}}
    )

    assert set(App.objects.get(SIM).slots) == {"only"}
    assert [a.name for a in App.objects.all()].count(SIM) == 1


@pytest.mark.parametrize(
    ("slot", "words"),
    [
        ({"direction": "in", "local_path": "/etc/passwd"}, "relative"),
        ({"direction": "in", "local_path": "../up.dat"}, "'..'"),
        ({"direction": "in", "local_path": "a/../../up.dat"}, "'..'"),
        ({"direction": "sideways", "local_path": "a"}, "direction"),
        ({"direction": "in", "local_path": "a", "colour": "red"}, "colour"),
        ({"direction": "in", "local_path": "a", "required": "yes"}, "required"),
    ],
)
def test_app_slot_that_breaks_a_rule_is_refused_naming_app_and_slot(
    api_site: Site, slot: dict[str, object], words: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        App.objects.create(name="bad.app", transfers={"the_slot": slot})

    message = str(refused.value)
    assert "\n" not in message
    assert "'bad.app'" in message and "'the_slot'" in message and words in message
    assert "bad.app" not in [a.name for a in App.objects.all()]


# -- creating jobs ------------------------------------------------------------------


def test_job_create_fills_each_slot_with_a_transfer_item(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(
        workdir="ensemble/1",
        app=sim,
        transfers={
            **sim_transfers(api_site),
            "extra": ref(api_site, "laptop", "params/p.json"),
        },
        tags={"campaign": "spring"},
    )

    assert job.id is not None
    assert job.state == JobState.READY
    items = {item.slot: item for item in job.items()}
    assert set(items) == {"input_file", "extra", "result"}
    assert items["input_file"].direction == "in"
    assert items["input_file"].local_path == "input.nw"
    assert items["input_file"].location_alias == "laptop"
    assert items["input_file"].remote_path == at(api_site, "laptop", "in/1.dat")
    assert items["extra"].local_path == "extra/params.json"
    assert items["result"].direction == "out"
    assert items["result"].location_alias == "archive"
    assert items["result"].remote_path == at(api_site, "archive", "out/1.json")


def test_stage_in_items_are_pending_and_stage_out_items_await_the_job(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(workdir="w", app=sim, transfers=sim_transfers(api_site))

    assert job.state == JobState.READY
    assert item_states(job) == {
        "input_file": ItemState.PENDING,
        "result": ItemState.AWAITING_JOB,
    }


def test_location_as_a_mapping_is_accepted_like_the_string_form(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(
        workdir="mapped",
        app=sim,
        transfers={
            "input_file": {
                "location_alias": "laptop",
                "path": at(api_site, "laptop", "in/m.dat"),
            },
            "result": ref(api_site, "archive", "out/m.json"),
        },
    )

    items = {item.slot: item for item in job.items()}
    assert items["input_file"].location_alias == "laptop"
    assert items["input_file"].remote_path == at(api_site, "laptop", "in/m.dat")


def test_path_with_colons_splits_on_the_first_colon_only(
    api_site: Site, sim: str
) -> None:
    colon_path = at(api_site, "laptop", "runs/2024-01-01T10:00:00/in.dat")
    job = Job.objects.create(
        workdir="colons",
        app=sim,
        transfers={
            "input_file": f"laptop:{colon_path}",
            "result": ref(api_site, "archive", "a:b:c.json"),
        },
    )

    items = {item.slot: item for item in job.items()}
    assert items["input_file"].location_alias == "laptop"
    assert items["input_file"].remote_path == colon_path
    assert items["result"].remote_path.endswith("/archive/a:b:c.json")


def _with(site: Site, **changes: object) -> dict[str, object]:
    """The good transfers of ``sim_transfers`` with some slots changed or removed."""
    transfers = {**sim_transfers(site), **changes}
    return {slot: value for slot, value in transfers.items() if value is not None}


def _laptop(site: Site) -> str:
    return str(site.root.parent / "laptop")


# (transfers for the site, slot named in the message, words in the message)
REFUSALS = {
    "unknown slot": (
        lambda s: _with(s, nope=ref(s, "laptop", "x")),
        "'nope'",
        "no such slot",
    ),
    "required slot missing": (lambda s: _with(s, result=None), "result", "required"),
    "unknown alias": (
        lambda s: _with(s, input_file="desktop:/data/in.dat"),
        "'input_file'",
        "'desktop'",
    ),
    "relative remote path": (
        lambda s: _with(s, input_file="laptop:in/1.dat"),
        "'input_file'",
        "absolute",
    ),
    "no alias at all": (
        lambda s: _with(s, input_file=at(s, "laptop", "x")),
        "'input_file'",
        "alias:",
    ),
    "empty alias": (
        lambda s: _with(s, input_file=":/data/in.dat"),
        "'input_file'",
        "alias:",
    ),
    "neither form": (lambda s: _with(s, input_file=42), "'input_file'", "neither"),
    "a list": (
        lambda s: _with(s, input_file=["laptop", "/x"]),
        "'input_file'",
        "neither",
    ),
    "mapping with another key": (
        lambda s: _with(s, input_file={"alias": "laptop", "path": _laptop(s) + "/x"}),
        "'input_file'",
        "location_alias",
    ),
    "mapping without a path": (
        lambda s: _with(s, input_file={"location_alias": "laptop"}),
        "'input_file'",
        "location_alias",
    ),
    "path in another location's root": (
        lambda s: _with(s, input_file="laptop:" + at(s, "archive", "x.dat")),
        "'input_file'",
        "outside",
    ),
    "path climbing out of the root": (
        lambda s: _with(s, input_file=f"laptop:{_laptop(s)}/../site/settings.yml"),
        "'input_file'",
        "outside",
    ),
    "sibling sharing the root as a prefix": (
        lambda s: _with(s, input_file=f"laptop:{_laptop(s)}-evil/x.dat"),
        "'input_file'",
        "outside",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_job_that_breaks_a_rule_is_refused_naming_job_and_slot(
    api_site: Site, sim: str, case: str
) -> None:
    make_transfers, slot, words = REFUSALS[case]

    with pytest.raises(ValidationError) as refused:
        Job.objects.create(
            workdir="runs/bad", app=sim, transfers=make_transfers(api_site)
        )

    message = str(refused.value)
    assert "\n" not in message
    assert "job 'runs/bad'" in message
    assert slot in message
    assert words in message
    assert Job.objects.count() == 0
    assert TransferItem.objects.count() == 0


@pytest.mark.parametrize(
    ("workdir", "words"),
    [
        ("../escape", "'..'"),
        ("a/../../escape", "'..'"),
        ("/abs/dir", "relative"),
        ("", "non-empty"),
        (".", "data/ itself"),
    ],
)
def test_workdir_outside_the_site_data_is_refused(
    api_site: Site, sim: str, workdir: str, words: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Job.objects.create(workdir=workdir, app=sim, transfers=sim_transfers(api_site))

    message = str(refused.value)
    assert "workdir" in message and words in message
    assert Job.objects.count() == 0


def test_job_of_an_unknown_app_is_refused(api_site: Site, sim: str) -> None:
    with pytest.raises(ValidationError, match="no app named 'ghost'"):
        Job.objects.create(workdir="w", app="ghost")


def test_tags_must_be_text(api_site: Site, sim: str) -> None:
    with pytest.raises(ValidationError, match="tags"):
        bad_tags = {"n": 1}
        Job.objects.create(workdir="w", app="bare", tags=bad_tags)  # type: ignore


# -- states on creation and after ---------------------------------------------------


def test_job_without_stage_in_items_starts_staged_in(api_site: Site, sim: str) -> None:
    post = Job.objects.create(
        workdir="p", app="post", transfers={"result": ref(api_site, "archive", "r")}
    )
    bare = Job.objects.create(workdir="b", app="bare")

    assert post.state == JobState.STAGED_IN
    assert item_states(post) == {"result": ItemState.AWAITING_JOB}
    assert bare.state == JobState.STAGED_IN


def test_optional_in_slot_left_empty_means_no_stage_in(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(workdir="p", app="pre")

    assert job.state == JobState.STAGED_IN
    assert job.items() == []


def test_postprocessed_job_without_out_items_goes_straight_to_finished(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(workdir="b", app="bare")

    job.state = "POSTPROCESSED"
    job.save()

    assert job.state == JobState.JOB_FINISHED
    assert Job.objects.get(id=job.id).state == JobState.JOB_FINISHED


def test_postprocessed_releases_the_stage_out_items(api_site: Site, sim: str) -> None:
    job = Job.objects.create(workdir="w", app=sim, transfers=sim_transfers(api_site))
    job.state = "STAGED_IN"
    job.save()
    assert item_states(job)["result"] == ItemState.AWAITING_JOB

    job.state = "POSTPROCESSED"
    job.save()

    assert job.state == JobState.POSTPROCESSED
    assert item_states(job)["result"] == ItemState.PENDING
    pending_out = TransferItem.objects.filter(direction="out", state="pending")
    assert [item.job_id for item in pending_out] == [job.id]


def test_saving_an_unknown_state_is_refused(api_site: Site, sim: str) -> None:
    job = Job.objects.create(workdir="b", app="bare")

    job.state = "DANCING"
    with pytest.raises(ValidationError, match="unknown job state 'DANCING'"):
        job.save()

    assert Job.objects.get(id=job.id).state == JobState.STAGED_IN


def test_child_awaits_parents_and_moves_on_when_the_parent_finishes(
    api_site: Site, sim: str
) -> None:
    parent = Job.objects.create(workdir="parent", app="bare")
    child = Job.objects.create(
        workdir="child",
        app="pre",
        parents=[parent],
        transfers={"data": ref(api_site, "laptop", "d.txt")},
    )
    assert child.state == JobState.AWAITING_PARENTS
    assert item_states(child) == {"data": ItemState.AWAITING_JOB}
    assert child.parents == [parent.id]

    parent.state = "POSTPROCESSED"
    parent.save()

    child.refresh_from_db()
    assert parent.state == JobState.JOB_FINISHED
    assert child.state == JobState.READY
    assert item_states(child) == {"data": ItemState.PENDING}


def test_child_without_stage_in_goes_to_staged_in_when_parents_finish(
    api_site: Site, sim: str
) -> None:
    parent = Job.objects.create(workdir="parent", app="bare")
    child = Job.objects.create(workdir="child", app="bare", parents=[parent.id])
    assert child.state == JobState.AWAITING_PARENTS

    parent.state = "POSTPROCESSED"
    parent.save()

    assert Job.objects.get(id=child.id).state == JobState.STAGED_IN


def test_child_waits_for_every_parent(api_site: Site, sim: str) -> None:
    first = Job.objects.create(workdir="first", app="bare")
    second = Job.objects.create(workdir="second", app="bare")
    child = Job.objects.create(workdir="child", app="bare", parents=[first, second])

    first.state = "POSTPROCESSED"
    first.save()
    assert child.refresh_from_db().state == JobState.AWAITING_PARENTS

    second.state = "POSTPROCESSED"
    second.save()
    assert child.refresh_from_db().state == JobState.STAGED_IN


def test_child_of_a_finished_parent_starts_ready(api_site: Site, sim: str) -> None:
    parent = Job.objects.create(workdir="parent", app="bare")
    parent.state = "POSTPROCESSED"
    parent.save()

    child = Job.objects.create(
        workdir="child",
        app="pre",
        parents=[parent],
        transfers={"data": ref(api_site, "laptop", "d.txt")},
    )

    assert child.state == JobState.READY


def test_child_moves_on_when_parent_stage_out_completes(
    api_site: Site, sim: str
) -> None:
    """The whole path a real parent takes: stage in, run, stage out, finish."""
    db = store(api_site)
    parent = Job.objects.create(
        workdir="parent", app=sim, transfers=sim_transfers(api_site)
    )
    child = Job.objects.create(workdir="child", app="bare", parents=[parent])

    _move_items(db, parent, Direction.IN, "laptop")
    assert parent.refresh_from_db().state == JobState.STAGED_IN

    parent.state = "POSTPROCESSED"
    parent.save()
    assert child.refresh_from_db().state == JobState.AWAITING_PARENTS

    _move_items(db, parent, Direction.OUT, "archive")
    assert parent.refresh_from_db().state == JobState.JOB_FINISHED
    assert child.refresh_from_db().state == JobState.STAGED_IN


def _move_items(db: Database, job: Job, direction: str, alias: str) -> None:
    """Claim a job's pending items in one task and settle them as done."""
    items = [i for i in job.items() if i.direction == direction]
    now = time.time()
    claimed = task_store.claim_batch(
        db,
        protocol="local",
        alias=alias,
        direction=direction,
        items=items,
        submission_id=f"sub-{job.id}-{direction}",
        label_prefix="test",
        now=now,
    )
    assert claimed is not None
    task, active = claimed
    task_store.settle_items(
        db,
        task.id,
        [ItemUpdate(i.id, i.job_id, ItemState.DONE, attempts=1) for i in active],
        now,
    )


def test_unsaved_parent_is_refused(api_site: Site, sim: str) -> None:
    unsaved = Job(workdir="later", app="bare")

    with pytest.raises(ValidationError, match="parent"):
        Job.objects.create(workdir="child", app="bare", parents=[unsaved])

    assert Job.objects.count() == 0


def test_missing_parent_is_refused(api_site: Site, sim: str) -> None:
    with pytest.raises(ValidationError, match=r"parent job\(s\) \[999\]"):
        Job.objects.create(workdir="child", app="bare", parents=[999])


# -- bulk creation ------------------------------------------------------------------


def test_bulk_create_makes_every_job(api_site: Site, sim: str) -> None:
    jobs = [
        Job(workdir=f"bulk/{n}", app=sim, transfers=sim_transfers(api_site, n))
        for n in range(5)
    ]

    created = Job.objects.bulk_create(jobs)

    assert [j.id for j in created] == sorted(j.id for j in created)
    assert all(j.state == JobState.READY for j in created)
    assert Job.objects.count() == 5
    assert TransferItem.objects.filter(direction="in").count() == 5


@pytest.mark.parametrize("bad", ["bad alias", "bad parent"])
def test_bulk_create_with_one_bad_job_creates_none(
    api_site: Site, sim: str, bad: str
) -> None:
    jobs = [
        Job(workdir=f"bulk/{n}", app=sim, transfers=sim_transfers(api_site, n))
        for n in range(4)
    ]
    if bad == "bad alias":
        jobs[2].transfers["input_file"] = "nowhere:/x"
    else:
        jobs[3].parents = [12345]

    with pytest.raises(ValidationError) as refused:
        Job.objects.bulk_create(jobs)

    assert ("bulk/2" if bad == "bad alias" else "bulk/3") in str(refused.value)
    assert Job.objects.count() == 0
    assert TransferItem.objects.count() == 0
    assert all(j.id is None for j in jobs)


# -- queries ------------------------------------------------------------------------


def test_filter_by_state_and_tags_count_and_get(api_site: Site, sim: str) -> None:
    a = Job.objects.create(workdir="a", app="bare", tags={"run": "1", "kind": "x"})
    b = Job.objects.create(workdir="b", app="bare", tags={"run": "2", "kind": "x"})
    c = Job.objects.create(workdir="c", app="bare", tags={"run": "1", "kind": "y"})
    b.state = "RUNNING"
    b.save()

    assert Job.objects.count() == 3
    assert Job.objects.filter(state="STAGED_IN").count() == 2
    assert [j.id for j in Job.objects.filter(state="RUNNING")] == [b.id]
    assert [j.id for j in Job.objects.filter(tags={"run": "1"})] == [a.id, c.id]
    assert [j.id for j in Job.objects.filter(tags={"run": "1", "kind": "y"})] == [c.id]
    chained = Job.objects.filter(tags={"kind": "x"}).filter(state="STAGED_IN")
    assert [j.id for j in chained] == [a.id]
    assert (
        Job.objects.filter(state=["RUNNING", "STAGED_IN"], tags={"kind": "x"}).count()
        == 2
    )
    assert Job.objects.filter(tags={"run": "3"}).count() == 0

    got = Job.objects.get(id=c.id)
    assert (got.workdir, got.app, got.tags) == ("c", "bare", {"run": "1", "kind": "y"})


def test_get_of_a_missing_job_raises_not_found(api_site: Site, sim: str) -> None:
    with pytest.raises(NotFound, match="no job with id 404"):
        Job.objects.get(id=404)


def test_filter_on_an_unknown_state_is_refused(api_site: Site, sim: str) -> None:
    with pytest.raises(ValidationError, match="'STAGED_INN'"):
        Job.objects.filter(state="STAGED_INN").count()
    with pytest.raises(ValidationError, match="'flying'"):
        TransferItem.objects.filter(state="flying").count()


def test_active_items_are_found_with_their_task(api_site: Site, sim: str) -> None:
    jobs = Job.objects.bulk_create(
        [
            Job(workdir=f"j{n}", app=sim, transfers=sim_transfers(api_site, n))
            for n in range(3)
        ]
    )
    pending = list(TransferItem.objects.filter(direction="in", state="pending"))
    assert len(pending) == 3

    claimed = task_store.claim_batch(
        store(api_site),
        protocol="local",
        alias="laptop",
        direction="in",
        items=pending[:2],
        submission_id="sub-1",
        label_prefix="test",
        now=time.time(),
    )
    assert claimed is not None
    task, _ = claimed

    active = list(TransferItem.objects.filter(direction="in", state="active"))
    assert [i.job_id for i in active] == [jobs[0].id, jobs[1].id]
    assert {i.task_id for i in active} == {task.id}
    assert active[0].remote_path == at(api_site, "laptop", "in/0.dat")
    assert TransferItem.objects.filter(direction="in", state="pending").count() == 1
    assert TransferItem.objects.filter(task_id=task.id).count() == 2
    assert TransferItem.objects.filter(direction="out", state="active").count() == 0


def test_queryset_update_sets_every_selected_job(api_site: Site, sim: str) -> None:
    for n in range(3):
        Job.objects.create(workdir=f"j{n}", app="bare", tags={"batch": "b"})

    moved = Job.objects.filter(tags={"batch": "b"}).update(state="POSTPROCESSED")

    assert moved == 3
    assert Job.objects.filter(state="JOB_FINISHED").count() == 3


# -- journal ------------------------------------------------------------------------


def test_journal_records_creation_and_every_state_change(
    api_site: Site, sim: str
) -> None:
    job = Job.objects.create(workdir="w", app=sim, transfers=sim_transfers(api_site))
    for state in ("STAGED_IN", "RUNNING", "RUN_DONE", "POSTPROCESSED"):
        job.state = state
        job.save()

    entries = job_store.recent_journal(store(api_site), 100, job_id=job.id)

    kinds = [e.kind for e in entries]
    assert kinds[0] == "job.created"
    assert kinds.count("job.created") == 1
    moves = [e.message.split(":")[0] for e in entries if e.kind == "job.state"]
    assert moves == [
        f"job {job.id} -> STAGED_IN",
        f"job {job.id} -> RUNNING",
        f"job {job.id} -> RUN_DONE",
        f"job {job.id} -> POSTPROCESSED",
    ]
    assert all(e.job_id == job.id for e in entries)


def test_saving_the_same_state_again_changes_nothing(api_site: Site, sim: str) -> None:
    job = Job.objects.create(workdir="b", app="bare")
    before = job_store.recent_journal(store(api_site), 100, job_id=job.id)

    job.save()
    Job.objects.filter(id=job.id).update(state="STAGED_IN")

    after = job_store.recent_journal(store(api_site), 100, job_id=job.id)
    assert after == before


@pytest.mark.parametrize("parents", [["one"], [True], 3, "12"])
def test_parents_that_are_not_job_ids_are_refused(
    api_site: Site, sim: str, parents: object
) -> None:
    job = Job(workdir="child", app="bare")
    job.parents = parents  # type: ignore[assignment]

    with pytest.raises(ValidationError, match="job 'child': parents must be"):
        Job.objects.bulk_create([job])
