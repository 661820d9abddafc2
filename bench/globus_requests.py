"""How many Globus requests the engine spends, and how fast it stages many jobs.

Run from the repository root::

    python bench/globus_requests.py [--tasks 60] [--jobs 2000]

Two measurements against the stand-in Globus service on loopback, through the real
globus-sdk, with a service account (no login):

1. Requests per engine cycle with ``--tasks`` one-file tasks in flight (the
   stand-in holds them with a long per-file delay): this engine, which polls with
   one ``task_list`` request per 100 task ids, against polling each task on its
   own with ``get_task``, as Balsam's own transfer service does. Counted by the
   stand-in's request counters, in one run.
2. Wall time for ``--jobs`` one-file stage-in jobs to reach STAGED_IN, with the
   engine in a thread as the console runs it.

The stand-in answers each request in tens of milliseconds on some machines (its
HTTP server sends small writes that meet delayed ACKs), so times mostly show how
many round trips were made; the request counts are exact.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import globus_sdk

from balsam_tui.engine import Engine
from balsam_tui.settings import load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.states import JobState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import JobQuery, JobSpec
from balsam_tui.testing.globus_standin import GlobusStandin

SITE_COLLECTION = "be7c0000-0000-4000-8000-0000000000a1"
REMOTE_COLLECTION = "be7c0000-0000-4000-8000-0000000000b2"
SERVICE_CLIENT = "be7c0000-0000-4000-8000-0000000000c3"
CYCLES = 5

SETTINGS = """\
transfers:
  transfer_locations:
    remote: globus://{remote}/data
  globus_endpoint_id: {site}
  globus_endpoint_site_path: /site
  globus_poll_interval: {period}
  max_concurrent_transfers: {concurrency}
  transfer_batch_size: {batch}
  service_period: {period}
"""


def make_site(root: Path, *, jobs: int, concurrency: int, batch: int, period: float):
    """A site with ``jobs`` one-file stage-in jobs; returns it and the remote dir."""
    remote = root / "remote"
    site = init_site(
        root / "site",
        settings_text=SETTINGS.format(
            remote=REMOTE_COLLECTION,
            site=SITE_COLLECTION,
            concurrency=concurrency,
            batch=batch,
            period=period,
        ),
    )
    for n in range(jobs):
        path = remote / "data" / f"run-{n // 500}" / f"frame-{n:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(n.to_bytes(4, "big") * 256)
    db = Database(site.store_path)
    job_store.create_app(
        db, "bench.frame", {"frame": {"direction": "in", "local_path": "frame.dat"}}
    )
    specs = [
        JobSpec(
            workdir=f"jobs/{n:05d}",
            app="bench.frame",
            transfers={"frame": f"remote:/data/run-{n // 500}/frame-{n:05d}.dat"},
        )
        for n in range(jobs)
    ]
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return site, remote


def start_standin(root: Path, remote: Path, **options: object) -> GlobusStandin:
    standin = GlobusStandin(
        {SITE_COLLECTION: root, REMOTE_COLLECTION: remote}, **options
    ).start()
    os.environ.update(standin.environ)
    return standin


def staged_in(site: Site) -> int:
    db = Database(site.store_path)
    try:
        return job_store.count_jobs(db, JobQuery(state=JobState.STAGED_IN))
    finally:
        db.close()


def requests_per_cycle(tasks: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-poll-")).resolve()
    site, remote = make_site(root, jobs=tasks, concurrency=tasks, batch=1, period=0.1)
    standin = start_standin(root, remote, per_file_delay=600)
    engine = Engine(site)
    try:
        engine.run_cycle()  # submits one task per job; they stay in flight
        in_flight = len(engine.snapshot.tasks_in_flight)
        assert in_flight == tasks, f"{in_flight} tasks in flight, wanted {tasks}"

        ours, our_times = [], []
        for _ in range(CYCLES):
            time.sleep(0.15)  # past the poll interval
            before = sum(standin.counters().requests.values())
            started = time.perf_counter()
            engine.run_cycle()
            our_times.append(time.perf_counter() - started)
            ours.append(sum(standin.counters().requests.values()) - before)

        # The same service account's token, so it sees the same tasks.
        client = globus_sdk.TransferClient(
            authorizer=globus_sdk.AccessTokenAuthorizer(_service_token())
        )
        task_ids = [t.backend_task_id for t in engine.snapshot.tasks_in_flight]
        theirs, their_times = [], []
        for _ in range(CYCLES):
            before = sum(standin.counters().requests.values())
            started = time.perf_counter()
            for task_id in task_ids:
                client.get_task(task_id)
            their_times.append(time.perf_counter() - started)
            theirs.append(sum(standin.counters().requests.values()) - before)
        client.close()
    finally:
        engine.close()
        standin.stop()

    mine, per_task = statistics.mean(ours), statistics.mean(theirs)
    print(f"Globus requests per engine cycle, {tasks} tasks in flight:")
    print(
        f"  this engine (task_list, up to 100 ids a request): {mine:5.1f} requests, "
        f"{statistics.mean(our_times) * 1000:7.1f} ms per cycle"
    )
    print(
        f"  one get_task request per task:                    {per_task:5.1f} "
        f"requests, {statistics.mean(their_times) * 1000:7.1f} ms per poll"
    )
    print(f"  ratio: {per_task / mine:.0f}x fewer requests with task_list")


def _service_token() -> str:
    auth = globus_sdk.ConfidentialAppAuthClient(SERVICE_CLIENT, "bench-secret")
    answer = auth.oauth2_client_credentials_tokens(
        requested_scopes="urn:globus:auth:scope:transfer.api.globus.org:all"
    )
    return answer.by_resource_server["transfer.api.globus.org"]["access_token"]


def end_to_end(jobs: int, *, concurrency: int, batch: int, period: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-e2e-")).resolve()
    site, remote = make_site(
        root, jobs=jobs, concurrency=concurrency, batch=batch, period=period
    )
    standin = start_standin(root, remote)
    engine = Engine(site)
    runner = threading.Thread(target=engine.run, daemon=True)
    started = time.perf_counter()
    runner.start()
    try:
        deadline = started + 110
        while staged_in(site) < jobs:
            if time.perf_counter() > deadline:
                raise SystemExit(f"gave up: {staged_in(site)} of {jobs} staged")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        engine.stop()
        runner.join(timeout=10)
        counters = standin.counters()
        standin.stop()

    tasks = counters.tasks_created
    print(f"End to end: {jobs} one-file stage-in jobs through the stand-in:")
    print(
        f"  wall time {elapsed:.1f} s ({jobs / elapsed:.0f} jobs/s); {tasks} tasks of "
        f"up to {batch}, {concurrency} in flight, service period {period} s"
    )
    shown = ", ".join(f"{k}={v}" for k, v in sorted(counters.requests.items()))
    print(f"  requests: {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--period", type=float, default=0.5)
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ["GLOBUS_CLIENT_ID"] = SERVICE_CLIENT
    os.environ["GLOBUS_CLIENT_SECRET"] = "bench-secret"
    requests_per_cycle(args.tasks)
    print()
    end_to_end(
        args.jobs, concurrency=args.concurrency, batch=args.batch, period=args.period
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
