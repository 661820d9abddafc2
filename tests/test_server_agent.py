"""balsam-tui as the transfer agent of a site on the real Balsam server.

The site, its app and its jobs are made with Balsam's own client, and every final
state is checked with it too; balsam-tui only moves the files and reports items.
The same run must come out whole when the server goes away for a while, and when
the agent itself is stopped and started again.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from balsam_tui.engine import Engine
from balsam_tui.server.client import (
    BalsamClient,
    ClientConfig,
    ServerConfigError,
    ServerRefused,
    ServerUnreachable,
    load_client_config,
)
from balsam_tui.server.sync import ServerSync
from balsam_tui.settings import ServerSettings, load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.states import ItemState, TaskState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery
from tests.balsam_server import BalsamServer, balsam_server  # noqa: F401

JOBS = 300
CHILDREN = 10

SLOTS = {
    "frame": {"required": True, "direction": "in", "local_path": "frame.dat"},
    "result": {"required": True, "direction": "out", "local_path": "out/result.txt"},
}

SETTINGS = """\
transfers:
  transfer_locations:
    laptop: local://localhost{root}/laptop
  max_concurrent_transfers: {concurrency}
  transfer_batch_size: {batch}
  service_period: 0.2
  local_workers: {workers}
balsam_server:
  site_id: {site_id}
"""


@dataclass
class ServedSite:
    server: BalsamServer
    root: Path
    site: Site
    site_id: int
    parents: list[int]
    children: list[int]

    def source(self, n: int) -> Path:
        return self.root / "laptop" / "in" / f"{n:03d}.dat"

    def archived(self, n: int) -> Path:
        return self.root / "laptop" / "out" / f"{n:03d}.txt"

    def workdir(self, n: int) -> Path:
        return self.site.data_dir / f"jobs/{n:03d}"

    def states(self) -> dict[str, int]:
        """Job counts by state, as Balsam's own client sees them."""
        return json.loads(
            self.server.run_client(f"""
from collections import Counter
jobs = client.Job.objects.filter(site_id={self.site_id})
print(json.dumps(Counter(job.state.value for job in jobs)))
""")
        )

    def set_state(self, job_ids: list[int], state: str) -> None:
        self.server.run_client(f"""
client.Job.objects.filter(id={job_ids!r}).update(state={state!r})
""")


@pytest.fixture
def client_file(
    balsam_server: BalsamServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A Balsam client configuration as ``balsam login`` leaves it."""
    path = tmp_path / "client.yml"
    path.write_text(
        f"api_root: {balsam_server.api_root}\n"
        f"token: {balsam_server.token}\n"
        "client_class: balsam.client.BasicAuthRequestsClient\n"
    )
    monkeypatch.setenv("BALSAM_CLIENT_PATH", str(path))
    monkeypatch.delenv("BALSAM_TOKEN", raising=False)
    monkeypatch.delenv("BALSAM_API_ROOT", raising=False)
    return path


def served_site(
    server: BalsamServer,
    root: Path,
    *,
    concurrency: int = 4,
    batch: int = 40,
    workers: int = 2,
    linked: bool = False,
) -> ServedSite:
    """Files to stage in, and a Balsam site with 300 jobs plus 10 children.

    ``linked`` plays an existing Balsam site: balsam-tui's site is a directory of
    its own whose ``data`` links to the Balsam site's ``data``.
    """
    balsam_site = root / ("balsam-site" if linked else "site")
    for n in range(JOBS + CHILDREN):
        source = root / "laptop" / "in" / f"{n:03d}.dat"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(f"frame {n}\n".encode() * 50)
    (root / "laptop" / "out").mkdir(parents=True)

    laptop = f"{root}/laptop"
    made = json.loads(
        server.run_client(f"""
site = client.Site.objects.create(
    name={f"agent-{uuid.uuid4().hex[:8]}"!r},
    path={str(balsam_site)!r},
    transfer_locations={{"laptop": "local://localhost{laptop}"}},
)
app = client.App.objects.create(
    site_id=site.id, name="Reduce", serialized_class="", source_code="",
    transfers={SLOTS!r},
)
def spec(n, parents=()):
    return client.Job(
        workdir=f"jobs/{{n:03d}}",
        app_id=app.id,
        parent_ids=list(parents),
        transfers={{
            "frame": f"laptop:{laptop}/in/{{n:03d}}.dat",
            "result": f"laptop:{laptop}/out/{{n:03d}}.txt",
        }},
    )
parents = client.Job.objects.bulk_create([spec(n) for n in range({JOBS})])
children = client.Job.objects.bulk_create(
    [spec({JOBS} + k, [parents[k].id]) for k in range({CHILDREN})]
)
print(json.dumps({{
    "site": site.id,
    "parents": [j.id for j in parents],
    "children": [j.id for j in children],
}}))
""")
    )
    agent = root / "agent" if linked else balsam_site
    if linked:
        (balsam_site / "data").mkdir(parents=True)
        agent.mkdir()
        (agent / "data").symlink_to(balsam_site / "data")
    site = init_site(
        agent,
        settings_text=SETTINGS.format(
            root=root,
            site_id=made["site"],
            concurrency=concurrency,
            batch=batch,
            workers=workers,
        ),
    )
    return ServedSite(
        server, root, site, made["site"], made["parents"], made["children"]
    )


class RunningEngine:
    """The engine in a thread, as the console runs it."""

    def __init__(self, site: Site) -> None:
        self.engine = Engine(site)
        self._thread = threading.Thread(target=self.engine.run, daemon=True)

    def __enter__(self) -> Engine:
        self._thread.start()
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def count_on_server(
    served: ServedSite, state: str, ids: list[int]
) -> Callable[[], int]:
    def count() -> int:
        with httpx.Client(
            base_url=served.server.api_root, headers=served.server.headers()
        ) as http:
            try:
                answer = http.get(
                    "/jobs/", params={"id": ids, "state": state, "limit": 1}
                )
            except httpx.TransportError:
                return -1
        return answer.json()["count"] if answer.status_code == 200 else -1

    return count


def wait_for(count: Callable[[], int], wanted: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    seen = count()
    while seen != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s, {seen} of {wanted} {what}")
        time.sleep(0.2)
        seen = count()


def compute(served: ServedSite, numbers: range) -> None:
    """What runs the jobs: a result in each workdir."""
    for n in numbers:
        out = served.workdir(n) / "out" / "result.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"result of {n}\n")


def check_files(served: ServedSite) -> None:
    for n in range(JOBS + CHILDREN):
        frame = served.workdir(n) / "frame.dat"
        assert frame.read_bytes() == served.source(n).read_bytes(), n
        assert served.archived(n).read_text() == f"result of {n}\n", n


def check_each_item_moved_once(served: ServedSite) -> None:
    db = Database(served.site.store_path)
    try:
        tasks = task_store.recent_tasks(db, 10_000)
    finally:
        db.close()
    assert {t.state for t in tasks} == {TaskState.SUCCEEDED}
    assert sum(t.item_count for t in tasks) == 2 * (JOBS + CHILDREN)


# -- the whole run ---------------------------------------------------------------------


def test_jobs_stage_in_and_finish_through_the_balsam_server(
    balsam_server: BalsamServer,  # noqa: F811
    client_file: Path,
    tmp_path: Path,
) -> None:
    served = served_site(balsam_server, tmp_path)
    parents, children = served.parents, served.children
    assert served.states() == {"READY": JOBS, "AWAITING_PARENTS": CHILDREN}

    with RunningEngine(served.site) as engine:
        wait_for(count_on_server(served, "STAGED_IN", parents), JOBS, 60, "staged in")
        assert served.states() == {"STAGED_IN": JOBS, "AWAITING_PARENTS": CHILDREN}
        assert engine.snapshot.problems == ()

        # Paused, the agent moves nothing, but the console follows the server.
        engine.pause()
        compute(served, range(JOBS))
        served.set_state(parents, "POSTPROCESSED")
        wait_for(
            lambda: engine.snapshot.job_counts.get("POSTPROCESSED", 0),
            JOBS,
            10,
            "POSTPROCESSED in the console",
        )
        engine.resume()
        wait_for(
            count_on_server(served, "STAGED_IN", children),
            CHILDREN,
            60,
            "children released and staged in",
        )
        compute(served, range(JOBS, JOBS + CHILDREN))
        served.set_state(children, "POSTPROCESSED")
        wait_for(
            count_on_server(served, "JOB_FINISHED", parents + children),
            JOBS + CHILDREN,
            60,
            "finished",
        )
        # The console's counts are the server's.
        wait_for(
            lambda: engine.snapshot.job_counts.get("JOB_FINISHED", 0),
            JOBS + CHILDREN,
            10,
            "finished in the console",
        )

    assert served.states() == {"JOB_FINISHED": JOBS + CHILDREN}
    check_files(served)
    check_each_item_moved_once(served)


def test_server_outage_and_agent_restart_lose_and_repeat_nothing(
    balsam_server: BalsamServer,  # noqa: F811
    client_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = served_site(balsam_server, tmp_path)
    parents, children = served.parents, served.children
    caplog.set_level(logging.INFO, logger="balsam_tui")

    with RunningEngine(served.site) as engine:
        wait_for(lambda: 1 if engine.snapshot.item_counts else 0, 1, 30, "first pull")
        balsam_server.stop_api()
        try:
            time.sleep(3.0)
            assert any("unreachable" in p for p in engine.snapshot.problems)
        finally:
            balsam_server.start_api()
        wait_for(count_on_server(served, "STAGED_IN", parents), JOBS, 90, "staged in")
        wait_for(lambda: len(engine.snapshot.problems), 0, 10, "problems cleared")

    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1, [r.getMessage() for r in unreachable]
    assert unreachable[0].levelno == logging.WARNING
    assert "\n" not in unreachable[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)

    # The agent is away while the jobs run; a new one finishes the work.
    compute(served, range(JOBS))
    served.set_state(parents, "POSTPROCESSED")
    with RunningEngine(served.site):
        wait_for(
            count_on_server(served, "STAGED_IN", children),
            CHILDREN,
            60,
            "children staged in",
        )
        compute(served, range(JOBS, JOBS + CHILDREN))
        served.set_state(children, "POSTPROCESSED")
        wait_for(
            count_on_server(served, "JOB_FINISHED", parents + children),
            JOBS + CHILDREN,
            60,
            "finished",
        )

    assert served.states() == {"JOB_FINISHED": JOBS + CHILDREN}
    check_files(served)
    check_each_item_moved_once(served)


def _headless(served: ServedSite, stderr_path: Path) -> subprocess.Popen:
    # stderr goes to a file: an unread pipe would fill and block the engine.
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "balsam_tui",
                "--site",
                str(served.site.root),
                "--no-ui",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=served.root,
            env=os.environ.copy(),
        )


def _local_items(served: ServedSite, state: str | None = None) -> int:
    db = Database(served.site.store_path)
    try:
        return job_store.count_items(db, ItemQuery(state=state))
    finally:
        db.close()


def test_agent_killed_mid_run_resumes_without_repeating_a_transfer(
    balsam_server: BalsamServer,  # noqa: F811
    client_file: Path,
    tmp_path: Path,
) -> None:
    # Small batches, one copy worker: many tasks are in flight when the kill lands.
    served = served_site(
        balsam_server, tmp_path, concurrency=2, batch=5, workers=1, linked=True
    )
    parents, children = served.parents, served.children

    first = _headless(served, tmp_path / "first.err")
    try:
        deadline = time.monotonic() + 60
        while _local_items(served, ItemState.DONE) < 60:
            assert time.monotonic() < deadline, (tmp_path / "first.err").read_text()
            time.sleep(0.05)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    staged = count_on_server(served, "STAGED_IN", parents)()
    assert staged < JOBS, "the kill came too late to prove much"

    second = _headless(served, tmp_path / "second.err")
    try:
        wait_for(count_on_server(served, "STAGED_IN", parents), JOBS, 90, "staged in")
        compute(served, range(JOBS))
        served.set_state(parents, "POSTPROCESSED")
        wait_for(
            count_on_server(served, "STAGED_IN", children),
            CHILDREN,
            60,
            "children staged in",
        )
        compute(served, range(JOBS, JOBS + CHILDREN))
        served.set_state(children, "POSTPROCESSED")
        wait_for(
            count_on_server(served, "JOB_FINISHED", parents + children),
            JOBS + CHILDREN,
            90,
            "finished",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    log_text = (tmp_path / "second.err").read_text()
    assert second.returncode == 0, log_text[-2000:]
    assert "is registered at" not in log_text
    assert (tmp_path / "balsam-site" / "data" / "jobs" / "000" / "frame.dat").exists()

    assert served.states() == {"JOB_FINISHED": JOBS + CHILDREN}
    check_files(served)
    check_each_item_moved_once(served)
    assert _local_items(served) == 2 * (JOBS + CHILDREN)


# -- failures an operator must understand ----------------------------------------------


def _sync(site: Site, site_id: int, client: BalsamClient) -> ServerSync:
    return ServerSync(
        site,
        Database(site.store_path),
        ServerSettings(site_id=site_id),
        lambda: client,
        backoff=(0.0, 0.0),
    )


def test_dead_server_expired_token_and_unknown_site_each_say_one_line(
    balsam_server: BalsamServer,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = init_site(tmp_path / "site")
    made = json.loads(
        balsam_server.run_client(f"""
site = client.Site.objects.create(name="probe-{uuid.uuid4().hex[:8]}", path="/x")
print(json.dumps({{"site": site.id}}))
""")
    )
    root = balsam_server.api_root
    cases = {
        "dead": (made["site"], "http://127.0.0.1:9", balsam_server.token),
        "expired": (
            made["site"],
            root,
            balsam_server.make_token(expires_in=-60),
        ),
        "unknown": (10**9, root, balsam_server.token),
    }
    problems = {}
    for name, (site_id, api_root, token) in cases.items():
        client = BalsamClient(
            ClientConfig(api_root, token, "test"), retry_sleep=0.0, reload_config=False
        )
        sync = _sync(site, site_id, client)
        caplog.clear()
        sync.pull()
        sync.push()
        sync.pull()
        problems[name] = sync.problem
        logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in logged] == [sync.problem], name
        sync.close()

    assert problems["dead"].startswith("Balsam server http://127.0.0.1:9 unreachable")
    assert "run `balsam login`" in problems["expired"]
    assert "site 1000000000 does not exist" in problems["unknown"]
    assert "balsam_server.site_id" in problems["unknown"]
    assert all("\n" not in p for p in problems.values())
    assert balsam_server.token not in " ".join(problems.values())


def test_updates_of_items_deleted_on_the_server_are_dropped_not_retried(
    balsam_server: BalsamServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    laptop = f"{tmp_path}/laptop"
    made = json.loads(
        balsam_server.run_client(f"""
site = client.Site.objects.create(
    name="gone-{uuid.uuid4().hex[:8]}",
    path={str(tmp_path / "site")!r},
    transfer_locations={{"laptop": "local://localhost{laptop}"}},
)
app = client.App.objects.create(
    site_id=site.id, name="Reduce", serialized_class="", source_code="",
    transfers={SLOTS!r},
)
jobs = client.Job.objects.bulk_create([
    client.Job(
        workdir=f"w/{{n}}",
        app_id=app.id,
        transfers={{
            "frame": f"laptop:{laptop}/{{n}}.dat",
            "result": f"laptop:{laptop}/{{n}}.out",
        }},
    )
    for n in range(2)
])
print(json.dumps({{"site": site.id, "jobs": [j.id for j in jobs]}}))
""")
    )
    site = init_site(tmp_path / "site")
    client = BalsamClient(
        ClientConfig(balsam_server.api_root, balsam_server.token, "test"),
        reload_config=False,
    )
    sync = _sync(site, made["site"], client)
    sync.pull()
    db = Database(site.store_path)
    items = job_store.list_items(db)
    assert [(i.direction, i.state) for i in items] == [("in", "pending")] * 2

    doomed, kept = made["jobs"]
    balsam_server.run_client(f"client.Job.objects.filter(id=[{doomed}]).delete()")
    task_store.claim_batch(
        db,
        protocol="local",
        alias="laptop",
        direction="in",
        items=items,
        submission_id="s-1",
        label_prefix="test",
        now=time.time(),
    )
    sync.push()
    sync.push()

    assert sync.problem == ""
    [on_server] = client.transfers(site_id=made["site"], direction="in")
    assert (on_server["job_id"], on_server["state"]) == (kept, "active")
    journal = [e.message for e in job_store.recent_journal(db, 50)]
    assert any("no longer exists on the Balsam server" in m for m in journal)
    db.close()
    sync.close()


def test_refused_requests_are_never_retried_but_server_errors_are(
    tmp_path: Path,
) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            status = 503 if self.path.startswith("/busy") else 404
            body = json.dumps({"detail": "Not found"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api_root = f"http://127.0.0.1:{server.server_address[1]}"
        client = BalsamClient(
            ClientConfig(api_root, "t", "test"), attempts=3, retry_sleep=0.0
        )
        with pytest.raises(ServerRefused) as refused:
            client.request("GET", "/missing")
        assert refused.value.status == 404
        assert len(hits) == 1

        with pytest.raises(ServerUnreachable):
            client.request("GET", "/busy")
        assert len(hits) == 4
        client.close()
    finally:
        server.shutdown()
        server.server_close()


# -- configuration ---------------------------------------------------------------------


def test_client_config_comes_from_settings_environment_then_client_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "client.yml"
    path.write_text("api_root: http://from-file:8000/\ntoken: file-token\n")
    environ = {"BALSAM_CLIENT_PATH": str(path)}

    from_file = load_client_config(environ=environ)
    assert (from_file.api_root, from_file.token) == (
        "http://from-file:8000",
        "file-token",
    )
    assert from_file.source == str(path)

    environ |= {"BALSAM_API_ROOT": "http://from-env", "BALSAM_TOKEN": "env-token"}
    from_env = load_client_config(environ=environ)
    assert (from_env.api_root, from_env.token) == ("http://from-env", "env-token")
    assert "env-token" not in repr(from_env)

    named = load_client_config("http://from-settings", environ=environ)
    assert named.api_root == "http://from-settings"

    with pytest.raises(ServerConfigError, match="run `balsam login`"):
        load_client_config(environ={"BALSAM_CLIENT_PATH": str(tmp_path / "none")})


def test_engine_settings_with_a_server_build_a_sync(tmp_path: Path) -> None:
    site = init_site(
        tmp_path / "site",
        settings_text="site_id: 7\nbalsam_server: {}\ntransfers: {}\n",
    )
    assert load_settings(site.settings_path).server == ServerSettings(site_id=7)
    engine = Engine(site)
    try:
        assert isinstance(engine._sync, ServerSync)
        assert engine._sync.site_id == 7
    finally:
        engine.close()
    plain = init_site(tmp_path / "plain")
    engine = Engine(plain)
    try:
        assert engine._sync is None
    finally:
        engine.close()
