"""A copy worker process for the local backend, and the engine-side handle to it.

Copying thousands of small files is mostly system calls, each of which releases and
re-takes Python's global lock; in a thread beside the engine (and the console) that
contention slows every store write and every redraw several times over. So the
local backend's threads only hand chunks of items to worker processes like this
one and wait; the copying itself happens here, in its own interpreter.

The protocol is one JSON line each way per chunk: ``{"task": id, "files": [...]}``
in, a list of outcomes out. A worker exits when its input closes, which is also
what happens when the engine process dies, however it dies.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import OrderedDict
from typing import IO

from balsam_tui.backends.base import FileCopy, FileOutcome

logger = logging.getLogger(__name__)

RESOLVERS_KEPT = 32


class CopierDied(Exception):
    """The worker process went away in the middle of a chunk."""


class Copier:
    """One worker process, started on first use and restarted after a death."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def copy(self, task_id: int, files: list[FileCopy]) -> list[FileOutcome]:
        process = self._running()
        # vars() of a dataclass instance is its field dict; asdict() deep-copies.
        request = json.dumps({"task": task_id, "files": [vars(f) for f in files]})
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(request + "\n")
            process.stdin.flush()
            answer = process.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:
            self.close()
            raise CopierDied("the copy worker process died")
        return [FileOutcome(**outcome) for outcome in json.loads(answer)]

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "balsam_tui.backends.copier"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        return self._process

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def serve(requests: IO[str], answers: IO[str]) -> None:
    """Copy chunk after chunk until the input closes."""
    from balsam_tui.backends.local import _copy_item_or_report, _Resolver

    resolvers: OrderedDict[int, _Resolver] = OrderedDict()
    for line in requests:
        request = json.loads(line)
        task_id = request["task"]
        resolver = resolvers.pop(task_id, None) or _Resolver()
        resolvers[task_id] = resolver
        while len(resolvers) > RESOLVERS_KEPT:
            resolvers.popitem(last=False)
        outcomes = [
            vars(_copy_item_or_report(FileCopy(**spec), resolver))
            for spec in request["files"]
        ]
        answers.write(json.dumps(outcomes) + "\n")
        answers.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        serve(sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        pass
