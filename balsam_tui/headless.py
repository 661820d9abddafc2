"""``balsam-tui --no-ui``: the engine in the foreground, as a long-lived service.

Log lines go to stderr and to ``log/balsam-tui.log`` in the site; a one-line summary
is logged every ``summary_every`` seconds. SIGINT and SIGTERM stop it cleanly: the
cycle under way finishes, nothing in flight is lost (the next start picks it up),
and the exit status is 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from logging.handlers import RotatingFileHandler
from types import FrameType

from balsam_tui.engine import Engine, EngineSnapshot, EngineStatus
from balsam_tui.site import Site

log = logging.getLogger("balsam_tui.headless")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_FILE = "balsam-tui.log"


def configure_logging(
    site: Site, *, verbose: bool = False, stderr: bool = True
) -> None:
    """Log to the site's rotating log file and, unless told not to, to stderr."""
    root = logging.getLogger("balsam_tui")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter = logging.Formatter(LOG_FORMAT)
    site.log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        RotatingFileHandler(site.log_dir / LOG_FILE, maxBytes=20_000_000, backupCount=5)
    ]
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)


class _Summary:
    """Logs the engine's summary line at most every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = 0.0

    def __call__(self, snapshot: EngineSnapshot) -> None:
        if snapshot.status == EngineStatus.STOPPED:
            return  # run_headless logs the last line itself
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log.info("%s", snapshot.summary())


def run_headless(
    site: Site,
    *,
    exit_when_idle: bool = False,
    summary_every: float = 30.0,
    verbose: bool = False,
    engine: Engine | None = None,
) -> int:
    configure_logging(site, verbose=verbose)
    engine = engine or Engine(site)
    summary = _Summary(summary_every)
    engine.subscribe(summary)
    _stop_on_signals(engine)
    log.info("headless engine for %s (settings %s)", site.root, site.settings_path)
    if engine.settings.ignored_sections:
        log.info(
            "settings sections balsam-tui does not use: %s",
            ", ".join(engine.settings.ignored_sections),
        )
    engine.run(exit_when_idle=exit_when_idle)
    log.info("%s", engine.snapshot.summary())
    return 0


def _stop_on_signals(engine: Engine) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info(
            "%s received: finishing the cycle and stopping", signal.Signals(signum).name
        )
        engine.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
