"""Start the real Balsam server on loopback and keep it up until interrupted.

For working on the Balsam transfer agent by hand: the same start-up as the test
fixture ``balsam_server`` (``tests/balsam_server.py``), with the server's log kept
in a directory you choose. It prints shell ``export`` lines for the API root, the
user and a fresh token, then waits for Ctrl-C (or SIGTERM) and stops everything.

    python scripts/balsam_server_env.py --log-dir /tmp/balsam-logs

The token lasts the server's default 48 hours. Run it from the repository root
or anywhere: it finds ``tests/`` beside this folder.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.balsam_server import (  # noqa: E402
    BalsamServerFailed,
    BalsamServerUnavailable,
    running_balsam_server,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="keep the server's log here (default: removed on exit)",
    )
    options = parser.parse_args(argv)
    if options.log_dir is not None:
        options.log_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    try:
        with running_balsam_server(log_dir=options.log_dir) as server:
            exports = {
                "BALSAM_TUI_TEST_API_ROOT": server.api_root,
                "BALSAM_TUI_TEST_USERNAME": server.username,
                "BALSAM_TUI_TEST_PASSWORD": server.password,
                "BALSAM_TUI_TEST_TOKEN": server.token,
                "BALSAM_TUI_TEST_PYTHON": str(server.python),
            }
            for name, value in exports.items():
                print(f"export {name}={shlex.quote(value)}")
            print(f"# server log: {server.log_path}; Ctrl-C stops", flush=True)
            stop.wait()
    except (BalsamServerUnavailable, BalsamServerFailed) as exc:
        print(f"balsam_server_env: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
