"""The ``balsam-tui`` command, run as a user runs it: a fresh process on a real site.

Every failure must be one line on stderr starting ``balsam-tui: error:``, with a
non-zero exit status and no traceback; and the commands that do not draw a console
must never import Textual or Rich.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from balsam_tui.settings import load_settings
from balsam_tui.site import Site
from balsam_tui.states import ItemState
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store import tasks as task_store
from balsam_tui.store.jobs import ItemQuery, JobSpec
from balsam_tui.store.tasks import ItemUpdate

UI_PACKAGES = ("textual", "rich")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find or create the user's real default site."""
    monkeypatch.delenv("BALSAM_SITE_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))


def balsam(
    *args: str | os.PathLike[str], site: Site | Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "balsam_tui"]
    if site is not None:
        command += ["--site", str(site.root if isinstance(site, Site) else site)]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=60
    )


def balsam_each(
    *commands: list[str | os.PathLike[str]], site: Site | Path | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (each is mostly start-up)."""
    command = [sys.executable, "-m", "balsam_tui"]
    if site is not None:
        command += ["--site", str(site.root if isinstance(site, Site) else site)]
    running = [
        (
            args,
            subprocess.Popen(
                [*command, *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    results = []
    for args, process in running:
        stdout, stderr = process.communicate(timeout=60)
        results.append(
            subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        )
    return results


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with exactly one ``balsam-tui: error:`` line; return it."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("balsam-tui: error: ")
    for word in words:
        assert word in lines[0]
    return lines[0]


def jobs_yaml(site: Site, *, app: str = "sim", input_ref: str | None = None) -> str:
    """Two apps and three jobs, the third a child of the first."""
    root = site.root.parent
    input_ref = input_ref or f"laptop:{root}/laptop/one.dat"
    return textwrap.dedent(
        f"""\
        apps:
          {app}:
            description: a simulation
            transfers:
              input_file: {{direction: in, local_path: input.nw, required: true}}
              result: {{direction: out, local_path: job.out, required: true}}
          tidy:
            transfers: {{}}
        jobs:
          - workdir: runs/1
            app: {app}
            tags: {{run: 1, kind: sim}}
            transfers:
              input_file: "{input_ref}"
              result: archive:{root}/archive/one.json
          - workdir: runs/2
            app: {app}
            tags: {{run: 2}}
            transfers:
              input_file: {{location_alias: laptop, path: "{root}/laptop/a:b.dat"}}
              result: archive:{root}/archive/two.json
          - workdir: runs/1-tidy
            app: tidy
            parents: [1]
        """
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jobs_json(site: Site, *args: str) -> list[dict[str, object]]:
    return json.loads(ok(balsam("jobs", "--json", *args, site=site)))


def items_json(site: Site, *args: str) -> list[dict[str, object]]:
    return json.loads(ok(balsam("items", "--json", *args, site=site)))


# -- what works ---------------------------------------------------------------------


def test_init_creates_a_site_that_commands_then_use(tmp_path: Path) -> None:
    out = ok(balsam("init", tmp_path / "new-site"))

    root = tmp_path / "new-site"
    assert str(root) in out
    assert (root / "settings.yml").is_file()
    assert (root / "data").is_dir() and (root / "log").is_dir()
    assert ok(balsam("jobs", site=root)).strip() == "(none)"


def test_submit_list_set_state_and_journal(site: Site, tmp_path: Path) -> None:
    jobs_file = write(tmp_path / "jobs.yml", jobs_yaml(site))

    out = ok(balsam("submit", jobs_file, site=site))
    assert out.strip() == "2 app(s) saved, 3 job(s) created (ids 1..3)"

    table, jobs, tagged, waiting, pending = map(
        ok,
        balsam_each(
            ["jobs"],
            ["jobs", "--json"],
            ["jobs", "--json", "--tag", "run=2"],
            ["jobs", "--json", "--state", "AWAITING_PARENTS"],
            ["items", "--state", "pending", "--json"],
            site=site,
        ),
    )
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "STATE", "APP", "WORKDIR", "REASON"]
    assert lines[1].split() == ["1", "READY", "sim", "runs/1"]
    assert lines[3].split() == ["3", "AWAITING_PARENTS", "tidy", "runs/1-tidy"]
    jobs = json.loads(jobs)
    assert [(j["id"], j["state"]) for j in jobs] == [
        (1, "READY"),
        (2, "READY"),
        (3, "AWAITING_PARENTS"),
    ]
    assert jobs[0]["tags"] == {"run": "1", "kind": "sim"}
    assert jobs[2]["parents"] == [1]
    assert [j["id"] for j in json.loads(tagged)] == [2]
    assert [j["id"] for j in json.loads(waiting)] == [3]
    pending = json.loads(pending)
    assert [(i["job_id"], i["slot"], i["direction"]) for i in pending] == [
        (1, "input_file", "in"),
        (2, "input_file", "in"),
    ]
    assert pending[1]["remote_path"] == f"{site.root.parent}/laptop/a:b.dat"
    assert pending[1]["location_alias"] == "laptop"

    out = ok(balsam("set-state", "POSTPROCESSED", "1", site=site))

    assert out.strip() == "1 job(s) moved to POSTPROCESSED"
    jobs, out_items, journal, entries = map(
        ok,
        balsam_each(
            ["jobs", "--json"],
            ["items", "--job", "1", "--direction", "out", "--json"],
            ["journal", "--job", "1"],
            ["journal", "--job", "1", "--json"],
            site=site,
        ),
    )
    assert [j["state"] for j in json.loads(jobs)] == [
        "POSTPROCESSED",
        "READY",
        "AWAITING_PARENTS",
    ]
    assert [i["state"] for i in json.loads(out_items)] == ["pending"]
    assert "job 1 created in READY" in journal
    assert "job 1 -> POSTPROCESSED: set by cli" in journal
    assert "job 2" not in journal
    assert [e["kind"] for e in json.loads(entries)] == ["job.created", "job.state"]


def test_set_state_that_finishes_a_parent_releases_its_child(site: Site) -> None:
    db = Database(site.store_path)
    job_store.create_app(db, "bare", {})
    parent, child = job_store.create_jobs(
        db, [JobSpec("parent", "bare"), JobSpec("child", "bare", parents=[1])], {}
    )

    out = ok(balsam("set-state", "POSTPROCESSED", str(parent), site=site))

    # One job was asked to move; what followed (it finishing, its child released
    # and passed on) is not counted as more jobs moved.
    assert out.strip() == "1 job(s) moved to POSTPROCESSED"
    assert job_store.get_job(db, parent).state == "JOB_FINISHED"
    assert job_store.get_job(db, child).state == "STAGED_IN"
    db.close()


def test_retry_sends_failed_items_back_to_pending(site: Site) -> None:
    db = Database(site.store_path)
    job_store.create_app(
        db, "sim", {"inp": {"direction": "in", "local_path": "in.dat"}}
    )
    root = site.root.parent
    locations = load_settings(site.settings_path).locations
    job_store.create_jobs(
        db,
        [
            JobSpec(f"r/{n}", "sim", {"inp": f"laptop:{root}/laptop/{n}"})
            for n in range(3)
        ],
        locations,
    )
    items = job_store.list_items(db)
    now = time.time()
    claimed = task_store.claim_batch(
        db,
        protocol="local",
        alias="laptop",
        direction="in",
        items=items,
        submission_id="s",
        label_prefix="t",
        now=now,
    )
    assert claimed is not None
    task, active = claimed
    task_store.settle_items(
        db,
        task.id,
        [
            ItemUpdate(
                i.id,
                i.job_id,
                ItemState.ERROR,
                error="source not found",
                attempts=3,
                permanent=True,
            )
            for i in active[:2]
        ]
        + [ItemUpdate(active[2].id, active[2].job_id, ItemState.DONE, attempts=1)],
        now,
    )
    db.close()

    out = ok(balsam("retry", str(items[0].id), site=site))

    assert out.startswith("1 item(s) sent back to pending")
    states = {i["id"]: (i["state"], i["task_id"]) for i in items_json(site)}
    assert states == {
        items[0].id: ("pending", None),
        items[1].id: ("error", task.id),
        items[2].id: ("done", task.id),
    }

    out = ok(balsam("retry", "--all-errors", site=site))

    assert out.startswith("1 item(s) sent back to pending")
    db = Database(site.store_path)
    pending = job_store.list_items(db, ItemQuery(state="pending"))
    assert [i.id for i in pending] == [items[0].id, items[1].id]
    journal = [e.message for e in job_store.recent_journal(db, 100)]
    assert f"item {items[1].id} retried by cli" in journal
    db.close()


def test_settings_shows_each_value_and_where_it_came_from(site: Site) -> None:
    table = ok(balsam("settings", site=site))
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert rows["max_concurrent_transfers"][1:] == ["2", "file"]
    assert rows["retry_limit"][-1] == "default"

    shown = json.loads(ok(balsam("settings", "--json", site=site)))
    by_key = {row["key"]: row for row in shown}
    assert by_key["transfer_batch_size"] == {
        "key": "transfer_batch_size",
        "value": 10,
        "from": "file",
    }
    assert by_key["num_items_query_limit"] == {
        "key": "num_items_query_limit",
        "value": 2000,
        "from": "default",
    }
    assert by_key["transfer_locations"]["from"] == "file"
    assert "laptop" in str(by_key["transfer_locations"]["value"])


# -- what fails, and how ------------------------------------------------------------


def test_malformed_settings_is_one_line_naming_file_and_line(
    site: Site, tmp_path: Path
) -> None:
    jobs_file = write(tmp_path / "jobs.yml", jobs_yaml(site))
    write(
        site.settings_path,
        "transfers:\n  transfer_locations: {}\n  max_concurrent_transfers: -3\n",
    )

    results = balsam_each(
        ["settings"], ["submit", jobs_file], ["--no-ui", "--exit-when-idle"], site=site
    )

    for result in results:
        line = assert_one_line_error(result, str(site.settings_path), ":3:")
        assert "max_concurrent_transfers" in line


def test_settings_that_are_not_yaml_are_one_line(site: Site) -> None:
    write(site.settings_path, "transfers:\n  service_period: [1,\n")

    assert_one_line_error(balsam("settings", site=site), str(site.settings_path))


def test_unknown_alias_in_jobs_file_is_refused_and_nothing_is_saved(
    site: Site, tmp_path: Path
) -> None:
    jobs_file = write(
        tmp_path / "jobs.yml",
        jobs_yaml(site, app="newapp", input_ref="desktop:/home/me/in.dat"),
    )

    line = assert_one_line_error(
        balsam("submit", jobs_file, site=site),
        str(jobs_file),
        "job 'runs/1'",
        "slot 'input_file'",
        "'desktop'",
    )

    assert "transfer_locations" in line
    db = Database(site.store_path)
    assert job_store.count_jobs(db) == 0
    assert job_store.list_apps(db) == []  # the file's apps were not kept either
    db.close()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("jobs:\n  - {workdir: a, app: sim\n", [":3:", "not valid YAML"]),
        ("jobs: [{workdir: a, app: sim, tags: 5}]\n", ["job #1", "tags"]),
        (
            "apps: {sim: {}}\njobs: [{workdir: a, app: sim, parents: abc}]\n",
            ["job 'a'", "parents"],
        ),
        ("jobs: {workdir: a}\n", ["'jobs' must be a list"]),
        ("apps: {sim: {transfers: {}, colour: red}}\n", ["app 'sim'"]),
        ("- just\n- a list\n", ["'apps' and/or 'jobs'"]),
    ],
    ids=["bad yaml", "tags", "parents", "jobs mapping", "app key", "list"],
)
def test_malformed_jobs_file_is_one_line_naming_it(
    site: Site, tmp_path: Path, text: str, words: list[str]
) -> None:
    jobs_file = write(tmp_path / "jobs.yml", text)

    assert_one_line_error(
        balsam("submit", jobs_file, site=site), str(jobs_file), *words
    )


def test_site_that_is_not_a_site_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    results = balsam_each(
        ["jobs"], ["--no-ui", "--exit-when-idle"], site=tmp_path / "empty"
    )

    for result in results:
        assert_one_line_error(result, "not a site", "balsam-tui init")


def test_damaged_store_file_is_one_line(site: Site) -> None:
    site.store_path.write_bytes(b"this is not a SQLite file at all " * 8)

    results = balsam_each(
        ["jobs"], ["--no-ui", "--exit-when-idle"], ["init", site.root], site=site
    )

    for result in results:
        assert_one_line_error(result, str(site.store_path), "cannot open the store")


def test_set_state_errors_are_one_line(site: Site) -> None:
    db = Database(site.store_path)
    job_store.create_app(db, "bare", {})
    job_store.create_jobs(db, [JobSpec("a", "bare")], {})

    unknown_job, unknown_state, listed_state, item_state, unknown_item = balsam_each(
        ["set-state", "POSTPROCESSED", "1", "42"],
        ["set-state", "FINISHED_ISH", "1"],
        ["jobs", "--state", "FINISHED_ISH"],
        ["items", "--state", "lost"],
        ["retry", "77"],
        site=site,
    )

    assert_one_line_error(unknown_job, "no job with id 42")
    assert_one_line_error(
        unknown_state, "unknown job state 'FINISHED_ISH'", "JOB_FINISHED"
    )
    assert_one_line_error(listed_state, "'FINISHED_ISH'")
    assert_one_line_error(item_state, "'lost'")
    assert_one_line_error(unknown_item, "no transfer item", "77")
    assert job_store.get_job(db, 1).state == "STAGED_IN"
    db.close()


# -- Textual and Rich stay out of the engine ----------------------------------------


def imported_modules(*args: str) -> set[str]:
    """What a fresh ``python -m balsam_tui ARGS`` imported (by ``-X importtime``)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "balsam_tui", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "balsam_tui.cli" in modules  # the measurement itself works
    return modules


def ui_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in UI_PACKAGES}


def test_help_never_imports_textual_or_rich() -> None:
    assert ui_modules(imported_modules("--help")) == set()


def test_jobs_listing_never_imports_textual_or_rich(site: Site) -> None:
    modules = imported_modules("--site", str(site.root), "jobs")

    assert "balsam_tui.store.jobs" in modules
    assert ui_modules(modules) == set()


def test_headless_engine_never_imports_textual_or_rich(site: Site) -> None:
    modules = imported_modules("--site", str(site.root), "--no-ui", "--exit-when-idle")

    assert "balsam_tui.engine.engine" in modules
    assert ui_modules(modules) == set()


def test_engine_store_api_backend_and_headless_import_without_ui() -> None:
    code = textwrap.dedent(
        """\
        import json, sys
        import balsam_tui.engine, balsam_tui.store, balsam_tui.api
        import balsam_tui.backends.local, balsam_tui.headless
        print(json.dumps(sorted(
            m for m in sys.modules if m.split(".")[0] in ("textual", "rich")
        )))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
