"""``balsam-tui --no-ui`` as a service: signals, the log file, the summary line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_site import make_site, wait_until


def _start(site_root: Path, *extra: str, stderr_path: Path) -> subprocess.Popen:
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "balsam_tui",
                "--site",
                str(site_root),
                "--no-ui",
                "--summary-every",
                "0.2",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_service_cleanly(tmp_path: Path, signum: int) -> None:
    es = make_site(tmp_path, jobs=20)
    err = tmp_path / "stderr.txt"
    process = _start(es.site.root, stderr_path=err)
    try:
        wait_until(lambda: "| jobs:" in err.read_text(), 30, "a summary line")
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
    text = err.read_text()
    assert f"{signal.Signals(signum).name} received" in text
    assert "engine stopped" in text
    assert "Traceback" not in text
    logged = (es.site.log_dir / "balsam-tui.log").read_text()
    assert "engine started" in logged and "engine stopped" in logged


def test_exit_when_idle_returns_once_the_work_is_done(tmp_path: Path) -> None:
    es = make_site(tmp_path, jobs=30, missing={4})
    err = tmp_path / "stderr.txt"
    process = _start(es.site.root, "--exit-when-idle", stderr_path=err)
    assert process.wait(timeout=120) == 0
    text = err.read_text()
    assert "nothing pending or in flight: stopping" in text
    # Stage-in is done; stage-out waits for a compute side that never came.
    assert "jobs: READY=1 STAGED_IN=29" in text.splitlines()[-1]
