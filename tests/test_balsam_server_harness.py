"""The real Balsam server, started by the harness, answers as the transfer agent needs.

Sites, apps and jobs are made with Balsam's own client inside the server's
environment; the agent's side of the conversation (listing transfer items and
jobs, patching items) is plain httpx with the bearer token, as the agent will do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.balsam_server import BalsamServer, balsam_server  # noqa: F401

SLOTS = {
    "frame": {"required": True, "direction": "in", "local_path": "frame.dat"},
    "calib": {
        "required": False,
        "direction": "in",
        "local_path": "calib",
        "recursive": True,
    },
    "result": {"required": True, "direction": "out", "local_path": "result.dat"},
}


@pytest.fixture
def http(balsam_server: BalsamServer) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(
        base_url=balsam_server.api_root, headers=balsam_server.headers(), timeout=30
    ) as client:
        yield client


def _make_site(server: BalsamServer, root: Path, jobs: str) -> dict[str, object]:
    """A site trusting ``laptop`` at ``root``, app ``Reduce``, and ``jobs``.

    ``jobs`` is Python building a list ``specs`` of ``client.Job`` from ``app``
    (and optionally a dict ``extra`` to report); the answer holds the ids and the
    states Balsam's client saw.
    """
    script = f"""
site = client.Site.objects.create(
    name={f"smoke-{uuid.uuid4().hex[:8]}"!r},
    path={str(root / "site")!r},
    transfer_locations={{"laptop": "local://localhost{root}/laptop"}},
)
app = client.App.objects.create(
    site_id=site.id,
    name="Reduce",
    serialized_class="",
    source_code="",
    transfers={SLOTS!r},
)
extra = {{}}
{jobs}
made = client.Job.objects.bulk_create(specs)
print(json.dumps({{
    "site": site.id,
    "app": app.id,
    "jobs": [job.id for job in made],
    "states": [job.state.value for job in made],
    **extra,
}}))
"""
    return json.loads(server.run_client(script))


def _job_state(http: httpx.Client, job_id: int) -> str:
    answer = http.get(f"/jobs/{job_id}")
    answer.raise_for_status()
    return answer.json()["state"]


def test_stage_in_items_done_move_job_from_ready_to_staged_in(
    balsam_server: BalsamServer,  # noqa: F811
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    made = _make_site(
        balsam_server,
        tmp_path,
        f"""
specs = [
    client.Job(
        workdir="scan/1",
        app_id=app.id,
        transfers={{
            "frame": "laptop:{tmp_path}/laptop/in/1.dat",
            "calib": {{"location_alias": "laptop", "path": "{tmp_path}/laptop/calib"}},
            "result": "laptop:{tmp_path}/laptop/out/1.dat",
        }},
    ),
    client.Job(
        workdir="scan/2",
        app_id=app.id,
        transfers={{"result": "laptop:{tmp_path}/laptop/out/2.dat"}},
    ),
]
""",
    )
    site_id = made["site"]
    staging_job, no_stage_in_job = made["jobs"]
    assert made["states"] == ["READY", "STAGED_IN"]

    pending = http.get("/transfers/", params={"site_id": site_id, "state": "pending"})
    assert pending.status_code == 200
    listing = pending.json()
    assert listing["count"] == 2
    items = listing["results"]
    assert [(i["job_id"], i["direction"], i["local_path"]) for i in items] == [
        (staging_job, "in", "frame.dat"),
        (staging_job, "in", "calib"),
    ]
    frame, calib = items
    assert frame["remote_path"] == f"{tmp_path}/laptop/in/1.dat"
    assert frame["location_alias"] == "laptop"
    assert (frame["recursive"], calib["recursive"]) == (False, True)
    assert (frame["task_id"], frame["transfer_info"]) == ("", {})

    second_page = http.get(
        "/transfers/",
        params={"site_id": site_id, "state": "pending", "limit": 1, "offset": 1},
    ).json()
    assert second_page["count"] == 2
    assert [item["id"] for item in second_page["results"]] == [calib["id"]]

    # A job's workdir is relative to the site's data folder, <site path>/data.
    assert http.get(f"/sites/{site_id}").json()["path"] == str(tmp_path / "site")
    jobs = http.get("/jobs/", params={"site_id": site_id}).json()
    assert jobs["count"] == 2
    assert [(j["id"], j["workdir"], j["state"]) for j in jobs["results"]] == [
        (staging_job, "scan/1", "READY"),
        (no_stage_in_job, "scan/2", "STAGED_IN"),
    ]

    patched = http.patch(
        "/transfers/",
        json=[
            {
                "id": frame["id"],
                "state": "done",
                "task_id": "task-1",
                "transfer_info": {"bytes": 5},
            }
        ],
    )
    assert patched.status_code == 200
    [echo] = patched.json()
    assert (echo["id"], echo["state"], echo["task_id"]) == (
        frame["id"],
        "done",
        "task-1",
    )
    assert echo["transfer_info"] == {"bytes": 5}
    assert _job_state(http, staging_job) == "READY"

    http.patch(
        "/transfers/", json=[{"id": calib["id"], "state": "done", "task_id": "task-2"}]
    ).raise_for_status()
    assert _job_state(http, staging_job) == "STAGED_IN"

    seen_by_balsam = json.loads(
        balsam_server.run_client(f"""
job = client.Job.objects.get(id={staging_job})
events = client.EventLog.objects.filter(job_id={staging_job})
print(json.dumps({{
    "state": job.state.value,
    "moves": sorted((e.from_state, e.to_state) for e in events),
}}))
""")
    )
    assert seen_by_balsam["state"] == "STAGED_IN"
    assert ["READY", "STAGED_IN"] in seen_by_balsam["moves"]

    left = http.get("/transfers/", params={"site_id": site_id}).json()["results"]
    assert {(i["direction"], i["state"]) for i in left} == {
        ("in", "done"),
        ("out", "awaiting_job"),
    }


def test_stage_out_done_finishes_job_but_leaves_its_children_waiting(
    balsam_server: BalsamServer,  # noqa: F811
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    made = _make_site(
        balsam_server,
        tmp_path,
        f"""
parent = client.Job(
    workdir="p", app_id=app.id, transfers={{"result": "laptop:{tmp_path}/out/p"}}
)
parent.save()
specs = [client.Job(workdir="c", app_id=app.id, parent_ids=[parent.id])]
extra = {{"parent": parent.id}}
""",
    )
    parent = made["parent"]
    [child] = made["jobs"]
    assert made["states"] == ["AWAITING_PARENTS"]

    [out_item] = http.get("/transfers/", params={"job_id": parent}).json()["results"]
    assert out_item["state"] == "awaiting_job"

    http.patch(
        "/jobs/", json=[{"id": parent, "state": "POSTPROCESSED"}]
    ).raise_for_status()
    assert http.get(f"/transfers/{out_item['id']}").json()["state"] == "pending"

    http.patch(
        "/transfers/", json=[{"id": out_item["id"], "state": "done"}]
    ).raise_for_status()
    assert _job_state(http, parent) == "JOB_FINISHED"
    # A job PATCH to JOB_FINISHED would release the child; an item PATCH does not.
    assert _job_state(http, child) == "AWAITING_PARENTS"


def test_refused_requests_say_why_in_detail(
    balsam_server: BalsamServer,  # noqa: F811
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    made = _make_site(
        balsam_server,
        tmp_path,
        f"""
specs = [
    client.Job(workdir="x", app_id=app.id, transfers={{"frame": "laptop:{tmp_path}/f"}})
]
""",
    )
    [item] = http.get("/transfers/", params={"site_id": made["site"]}).json()["results"]

    expired = httpx.get(
        f"{balsam_server.api_root}/transfers/",
        headers=balsam_server.headers(balsam_server.make_token(expires_in=-60)),
    )
    assert expired.status_code == 401
    assert expired.json() == {"detail": "Could not validate credentials"}
    assert expired.headers["www-authenticate"] == "Bearer"

    unknown = http.patch(
        "/transfers/",
        json=[{"id": item["id"], "state": "done"}, {"id": 10**9, "state": "done"}],
    )
    assert unknown.status_code == 400
    assert unknown.json() == {"detail": "Some TransferItems not found"}
    assert http.get(f"/transfers/{item['id']}").json()["state"] == "pending"

    bad_state = http.patch(
        "/transfers/", json=[{"id": item["id"], "state": "finished"}]
    )
    assert bad_state.status_code == 422
    assert bad_state.json()["detail"][0]["loc"] == ["body", 0, "state"]

    assert http.get("/transfers/", params={"site_id": 10**9}).json() == {
        "count": 0,
        "results": [],
    }
    assert http.get(f"/sites/{10**9}").status_code == 404
    assert http.get(f"/sites/{10**9}").json() == {"error": "Not found"}
