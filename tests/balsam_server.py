"""The real Balsam server, started on loopback for tests: PostgreSQL plus uvicorn.

Role: tests that speak Balsam's REST API use the session fixture ``balsam_server``;
a person uses ``scripts/balsam_server_env.py``. Both go through
``running_balsam_server``, which finds or installs what is missing, starts a
throw-away PostgreSQL cluster and the server on free loopback ports, registers a
user, and tears everything down afterwards.

What it needs, and where it comes from:

- PostgreSQL server binaries: Debian's ``postgresql`` package (15 on bookworm),
  found under ``/usr/lib/postgresql/*/bin``, else on ``PATH``, else installed with
  ``apt-get`` when we are root.
- Balsam's server from PyPI, in a virtual environment of its own because it needs
  pydantic 1 and this project needs pydantic 2. The environment is built once under
  ``~/.cache/balsam-tui-tests`` (or ``$XDG_CACHE_HOME``) and reused while its pins
  are unchanged.

Traps:

- The PyPI package ships no migration scripts, so the schema comes from the table
  metadata. That metadata declares ``ix_jobs_tags`` twice (``index=True`` and a
  GIN index in ``__table_args__``); both are dropped and the GIN index is made by
  hand.
- The server imports ``redis``, ``aredis``, ``orjson`` and needs
  ``python-multipart`` for its login form, none of which the package declares.
- PostgreSQL refuses to run as root: as root every PostgreSQL command runs as the
  ``postgres`` user, so the cluster directory lives in a fresh ``/tmp`` directory
  owned by that user (pytest's own temporary tree is not readable by it).
- Balsam's own client retries a failed request with exponential sleeps (minutes
  in all); ``run_client`` sets it to raise on the first failure instead.
- ``BalsamServer.stop_api``/``start_api`` stop and restart uvicorn alone, on the
  same port (PostgreSQL and its data stay), to play a server that goes away. The
  fixture is shared by the whole session: a test that stops it must start it again
  in a ``finally``.
- A test run that is killed (not interrupted) leaves PostgreSQL and uvicorn
  running: find them with ``ps -u postgres`` and ``pgrep -f balsam.server.main``;
  their directory is ``/tmp/balsam-tui-pg-*``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

logger = logging.getLogger(__name__)

# The known-good set for balsam 0.7.0a24. The first block is the recipe;
# the second is what balsam.server imports at start-up without declaring it.
SERVER_REQUIREMENTS: tuple[str, ...] = (
    "balsam==0.7.0a24",
    "fastapi==0.78.0",
    "starlette==0.19.1",
    "SQLAlchemy==1.4.41",
    "alembic==1.8.1",
    "psycopg2-binary",
    "PyJWT<2.10",
    "passlib==1.7.4",
    "bcrypt==4.0.1",
    "uvicorn==0.18.3",
    "pydantic<2",
    "python-multipart==0.0.5",
    "orjson",
    "redis==4.3.4",
    "aredis==1.1.8",
    # starlette 0.19 predates anyio 4's exception groups.
    "anyio==3.7.1",
)

USERNAME = "balsam-tui-tester"
DATABASE = "balsam"
PIP_TIMEOUT = 900
APT_TIMEOUT = 900
START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3
JWT_ALGORITHM = "HS256"


class BalsamServerUnavailable(RuntimeError):
    """PostgreSQL or Balsam's server cannot be had on this machine; one line why."""


class BalsamServerFailed(RuntimeError):
    """A part that was found did not start or answer as it should."""


class _PortTaken(BalsamServerFailed):
    """Another process bound a port between our probe and its use."""


class BalsamClientScriptFailed(RuntimeError):
    """A snippet run with ``BalsamServer.run_client`` exited non-zero."""


@dataclass(frozen=True)
class BalsamServer:
    """A running Balsam server and a registered user with a fresh token."""

    api_root: str
    token: str
    username: str
    password: str
    user_id: int
    python: Path
    log_path: Path
    secret_key: str = field(repr=False)
    api_process: _ApiProcess | None = field(default=None, repr=False, compare=False)

    def stop_api(self) -> None:
        """Kill Balsam's server (uvicorn); requests now fail to connect."""
        assert self.api_process is not None
        self.api_process.stop()

    def start_api(self) -> None:
        """Start Balsam's server again on the same port; return once it answers."""
        assert self.api_process is not None
        self.api_process.start()
        wait_until_answering(self.api_root, self.api_process.current, self.log_path)

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def run_client(self, script: str, *, timeout: float = 120.0) -> str:
        """Run ``script`` in the server's environment and return what it printed.

        The snippet starts with ``client`` (a logged-in
        ``balsam.client.BasicAuthRequestsClient``) and ``json`` in scope, so
        ``client.Site.objects.create(...)`` works as in Balsam's documentation.
        """
        program = _CLIENT_PRELUDE + textwrap.dedent(script)
        environ = {
            **_environ_without_balsam(),
            "BALSAM_TUI_TEST_API_ROOT": self.api_root,
            "BALSAM_TUI_TEST_TOKEN": self.token,
        }
        done = subprocess.run(
            [str(self.python), "-c", program],
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise BalsamClientScriptFailed(
                f"client script exited {done.returncode}: {_tail(done.stderr)}"
            )
        return done.stdout

    def make_token(self, *, expires_in: float) -> str:
        """A token for the test user signed like the server's, expiring in seconds.

        Negative values give an already expired token, to see how the server
        answers one.
        """
        claims = {
            "sub": self.user_id,
            "username": self.username,
            "exp": int(time.time() + expires_in),
        }
        return _sign_jwt(claims, self.secret_key)


class _ApiProcess:
    """The uvicorn process of a running server, which a test may stop and restart."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self._start = start
        self.current = start()

    def stop(self) -> None:
        _kill(self.current)

    def start(self) -> None:
        if self.current.poll() is None:
            return
        self.current = self._start()


_CLIENT_PRELUDE = """\
import json
import os

from balsam.client import BasicAuthRequestsClient

client = BasicAuthRequestsClient(
    os.environ["BALSAM_TUI_TEST_API_ROOT"],
    token=os.environ["BALSAM_TUI_TEST_TOKEN"],
    # A negative count makes the first failed request raise instead of sleeping.
    retry_count=-1,
)
"""

_SCHEMA_SCRIPT = """\
import sys

import psycopg2
from sqlalchemy import create_engine

from balsam.server.models.tables import Base, Job

admin_url, database, database_url = sys.argv[1:4]
connection = psycopg2.connect(admin_url)
connection.autocommit = True
connection.cursor().execute(f'CREATE DATABASE "{database}"')
connection.close()

for index in [i for i in Job.__table__.indexes if i.name == "ix_jobs_tags"]:
    Job.__table__.indexes.discard(index)
engine = create_engine(database_url)
Base.metadata.create_all(engine)
with engine.begin() as db:
    db.exec_driver_sql(
        "CREATE INDEX ix_jobs_tags ON jobs USING gin (tags jsonb_path_ops)"
    )
"""


# -- the pytest face -------------------------------------------------------------------


@pytest.fixture(scope="session")
def balsam_server() -> Iterator[BalsamServer]:
    """The real Balsam server for this test session; skipped where it cannot be had.

    Under CI (``CI`` set) a missing part fails instead: CI's machine has what it
    needs, and a skip there would hide that these tests never ran.
    """
    try:
        with running_balsam_server() as server:
            yield server
        return
    except BalsamServerUnavailable as exc:
        reason = f"Balsam server unavailable: {exc}"

    # Outside the except block, so the report is the one line and no traceback.
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# -- the whole sequence ----------------------------------------------------------------


@contextlib.contextmanager
def running_balsam_server(
    *, cache_dir: Path | None = None, log_dir: Path | None = None
) -> Iterator[BalsamServer]:
    """Start PostgreSQL and Balsam's server, yield a logged-in user, stop both.

    Logs go to ``log_dir`` when given, else into the run's temporary directory,
    which is removed at the end.
    """
    bindir = postgres_bindir()
    python = server_venv(cache_dir or default_cache_dir())

    for attempt in range(PORT_ATTEMPTS):
        with contextlib.ExitStack() as stack:
            try:
                server = _start(bindir, python, log_dir, stack)
            except _PortTaken as exc:
                if attempt == PORT_ATTEMPTS - 1:
                    raise BalsamServerFailed(str(exc)) from None
                logger.warning("%s; starting again on other ports", exc)
                continue
            yield server
            return


def _start(
    bindir: Path, python: Path, log_dir: Path | None, stack: contextlib.ExitStack
) -> BalsamServer:
    runtime = Path(tempfile.mkdtemp(prefix="balsam-tui-pg-"))
    stack.callback(shutil.rmtree, runtime, ignore_errors=True)
    log_path = (log_dir or runtime) / "balsam-server.log"
    pg_port, api_port = _free_ports(2)
    admin_url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/{DATABASE}"
    api_root = f"http://127.0.0.1:{api_port}"
    secret_key = secrets.token_hex(32)

    # The server spends seconds importing and touches the database only when
    # asked, so it starts first and PostgreSQL and the schema are made meanwhile.
    log = stack.enter_context(open(log_path, "ab"))
    api = _ApiProcess(
        lambda: launch_server(python, database_url, secret_key, api_port, log, runtime)
    )
    stack.callback(api.stop)

    start_postgres(bindir, runtime, pg_port)
    stack.callback(stop_postgres, bindir, runtime)
    create_schema(python, admin_url, database_url, runtime)

    wait_until_answering(api_root, api.current, log_path)
    password = secrets.token_urlsafe(16)
    user_id, token = register_user(api_root, USERNAME, password)
    return BalsamServer(
        api_root=api_root,
        token=token,
        username=USERNAME,
        password=password,
        user_id=user_id,
        python=python,
        log_path=log_path,
        secret_key=secret_key,
        api_process=api,
    )


# -- PostgreSQL ------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory holding initdb and pg_ctl, installing PostgreSQL if need be."""
    found = _find_postgres_bindir()
    if found is not None:
        return found

    _apt_install_postgres()
    found = _find_postgres_bindir()
    if found is None:
        raise BalsamServerUnavailable(
            "apt-get installed postgresql but no initdb/pg_ctl was found"
        )
    return found


def _find_postgres_bindir() -> Path | None:
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    for directory in reversed(candidates):
        if _has_server_tools(Path(directory)):
            return Path(directory)

    initdb = shutil.which("initdb")
    if initdb is not None:
        # Debian's /usr/local/bin entries are links into the versioned directory.
        directory = Path(initdb).resolve().parent
        if _has_server_tools(directory):
            return directory
    return None


def _has_server_tools(directory: Path) -> bool:
    names = ("initdb", "pg_ctl", "postgres")
    return all(os.access(directory / name, os.X_OK) for name in names)


def _apt_install_postgres() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BalsamServerUnavailable(
            "no PostgreSQL server binaries; install Debian's postgresql package"
        )

    logger.info("PostgreSQL not found; installing Debian's postgresql package")
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
    )
    for command in steps:
        try:
            done = subprocess.run(
                command,
                env=environ,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BalsamServerUnavailable(
                f"{' '.join(command[:2])} timed out after {APT_TIMEOUT} s"
            ) from None
        if done.returncode != 0:
            raise BalsamServerUnavailable(
                f"{' '.join(command[:2])} failed: {_tail(done.stderr or done.stdout)}"
            )


def start_postgres(bindir: Path, runtime: Path, port: int) -> None:
    """Make a cluster under ``runtime`` and start it on loopback ``port``."""
    data = runtime / "data"
    _hand_to_postgres_user(runtime)
    _as_postgres(
        [
            str(bindir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ]
    )

    # Durability is worthless for a throw-away cluster; these make it quick.
    options = " ".join(
        [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={runtime}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    _as_postgres(
        [
            str(bindir / "pg_ctl"),
            "start",
            "--wait",
            "--timeout",
            str(int(START_TIMEOUT)),
            "--pgdata",
            str(data),
            "--log",
            str(runtime / "postgres.log"),
            "-o",
            options,
        ],
        log=runtime / "postgres.log",
    )


def stop_postgres(bindir: Path, runtime: Path) -> None:
    with contextlib.suppress(BalsamServerFailed):
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(runtime / "data"),
                "--mode",
                "immediate",
                "--wait",
            ]
        )


def _hand_to_postgres_user(directory: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        shutil.chown(directory, user="postgres", group="postgres")
    except (LookupError, PermissionError) as exc:
        raise BalsamServerUnavailable(
            f"cannot give {directory} to the postgres user: {exc}"
        ) from None


def _as_postgres(command: Sequence[str], *, log: Path | None = None) -> None:
    """Run a PostgreSQL tool, as the postgres user when we are root."""
    tool = Path(command[0]).name
    if os.geteuid() == 0:
        if shutil.which("runuser") is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        else:
            quoted = " ".join(_shell_quote(part) for part in command)
            command = ["su", "postgres", "-s", "/bin/sh", "-c", quoted]

    done = subprocess.run(
        command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
    )
    if done.returncode != 0:
        detail = done.stderr or done.stdout
        if log is not None and log.exists():
            detail += log.read_text(errors="replace")
        if _names_taken_port(detail):
            raise _PortTaken(f"PostgreSQL's port was taken: {_tail(detail)}")
        raise BalsamServerFailed(f"PostgreSQL's {tool} failed: {_tail(detail)}")


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# -- Balsam's server -------------------------------------------------------------------


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "balsam-tui-tests"


def server_venv(cache_dir: Path) -> Path:
    """The server environment's interpreter, building the environment if needed.

    A marker written last records the pins, so a half-built environment (an
    interrupted first run) or one with old pins is rebuilt rather than trusted.
    """
    venv = cache_dir / "balsam-server-venv"
    python = venv / "bin" / "python"
    marker = venv / "balsam-tui-requirements.txt"
    wanted = "\n".join((f"# {sys.version.split()[0]}", *SERVER_REQUIREMENTS)) + "\n"

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        # Two test runs at once would otherwise build the same environment.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted and python.exists():
            return python

        logger.info("building Balsam's server environment in %s", venv)
        shutil.rmtree(venv, ignore_errors=True)
        _run_build_step([sys.executable, "-m", "venv", str(venv)], "venv")
        _run_build_step(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--retries",
                "2",
                *SERVER_REQUIREMENTS,
            ],
            "pip install",
        )
        marker.write_text(wanted)
    return python


def _run_build_step(command: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BalsamServerUnavailable(
            f"{what} for Balsam's server timed out after {PIP_TIMEOUT} s"
        ) from None
    if done.returncode != 0:
        raise BalsamServerUnavailable(
            f"{what} for Balsam's server failed: "
            f"{_tail(_pip_errors(done.stderr), lines=1)}"
        )


def _pip_errors(stderr: str) -> str:
    # pip warns about every missing local index; keep only what went wrong.
    lines = [line for line in stderr.splitlines() if not line.startswith("WARNING:")]
    return "\n".join(lines) or stderr


def create_schema(python: Path, admin_url: str, database_url: str, cwd: Path) -> None:
    """Create the database and Balsam's tables (see the module's first trap)."""
    done = subprocess.run(
        [str(python), "-c", _SCHEMA_SCRIPT, admin_url, DATABASE, database_url],
        env=_server_environ(database_url, secret_key="unused"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BalsamServerFailed(
            f"creating Balsam's schema failed: {_tail(done.stderr)}"
        )


def launch_server(
    python: Path,
    database_url: str,
    secret_key: str,
    port: int,
    log: IO[bytes],
    cwd: Path,
) -> subprocess.Popen[bytes]:
    """Start uvicorn serving Balsam on loopback ``port``, without waiting for it.

    ``cwd`` should hold no ``.env``: Balsam's settings read one from there and
    refuse any key they do not know.
    """
    return subprocess.Popen(
        [
            str(python),
            "-m",
            "uvicorn",
            "balsam.server.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=_server_environ(database_url, secret_key),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _server_environ(database_url: str, secret_key: str) -> dict[str, str]:
    environ = _environ_without_balsam()
    environ.update(
        BALSAM_DATABASE_URL=database_url,
        BALSAM_AUTH_LOGIN_METHODS='["password"]',
        BALSAM_AUTH_SECRET_KEY=secret_key,
        BALSAM_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return environ


def wait_until_answering(
    api_root: str, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            if _names_taken_port(log):
                raise _PortTaken(f"the server's port was taken: {_tail(log)}")
            raise BalsamServerFailed(
                f"Balsam's server exited {process.returncode} at start-up: {_tail(log)}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{api_root}/auth/how", timeout=2.0).status_code == 200:
                return
        time.sleep(0.05)
    raise BalsamServerFailed(
        f"Balsam's server did not answer on {api_root} within {START_TIMEOUT:.0f} s"
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    # No grace: the server keeps nothing outside PostgreSQL, which is thrown away
    # too, and uvicorn's graceful stop takes most of a second.
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def register_user(api_root: str, username: str, password: str) -> tuple[int, str]:
    """Register ``username`` and log in; the user's id and a bearer token."""
    with httpx.Client(base_url=api_root, timeout=30.0) as http:
        registered = http.post(
            "/auth/password/register",
            json={"username": username, "password": password},
        )
        if registered.status_code != 201:
            raise BalsamServerFailed(
                f"registering a user answered {registered.status_code}: "
                f"{registered.text[:300]}"
            )
        login = http.post(
            "/auth/password/login",
            data={"username": username, "password": password},
        )
        if login.status_code != 200:
            raise BalsamServerFailed(
                f"logging in answered {login.status_code}: {login.text[:300]}"
            )
    return registered.json()["id"], login.json()["access_token"]


# -- small parts -----------------------------------------------------------------------


def _environ_without_balsam() -> dict[str, str]:
    # Balsam reads its settings from BALSAM_* variables; a developer's own (or
    # this project's BALSAM_SITE_PATH) must not leak into the server under test.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BALSAM_")
    }


def _names_taken_port(log: str) -> bool:
    return "address already in use" in log.lower()


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports free now; another process may still take one."""
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def _sign_jwt(claims: dict[str, object], secret: str) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": JWT_ALGORITHM, "typ": "JWT"}).encode())
    payload = part(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines()[-lines:]]
    return " | ".join(line for line in kept if line) or "(no output)"
