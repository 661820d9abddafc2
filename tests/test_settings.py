"""Loading a site's settings.yml: defaults, Balsam files, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from balsam_tui.settings import (
    ServerSettings,
    SettingsError,
    SiteSettings,
    TransferSettings,
    default_settings_text,
    load_settings,
    parse_settings_text,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# A complete site settings.yml as Balsam writes one for a new site, for an imaginary
# cluster. Same sections and keys as Balsam's own, so it proves drop-in loading.
BALSAM_SITE_FILE = """\
# Site configuration for the Example cluster

site_id: 217  # set by Balsam when the site was registered

# Log files of the launcher and the site services
logging:
    level: INFO  # ERROR, WARNING, INFO or DEBUG
    format: '%(asctime)s | %(process)d | %(levelname)s | %(name)s:%(lineno)s]
        %(message)s'
    datefmt: '%Y-%m-%d %H:%M:%S'
    buffer_num_records: 1024
    flush_period: 30

# Only jobs carrying these tags are handled by this site
filter_tags:
    campaign: spring-runs

launcher:
    idle_ttl_sec: 30
    delay_sec: 1
    error_tail_num_lines: 10
    max_concurrent_mpiruns: 990
    compute_node: balsam.platform.compute_node.PolarisNode
    mpi_app_launcher: balsam.platform.app_run.PolarisRun
    local_app_launcher: balsam.platform.app_run.LocalAppRun
    mpirun_allows_node_packing: true
    serial_mode_prefetch_per_rank: 64
    serial_mode_startup_params:
        cpu_affinity: none

# Any service below can be switched off with `name: null`.

scheduler:
    scheduler_class: balsam.platform.scheduler.PBSScheduler
    sync_period: 10
    allowed_queues:
        debug:
            max_nodes: 2
            max_queued_jobs: 10
            max_walltime: 60
        prod:
            max_nodes: 128
            max_queued_jobs: 20
            max_walltime: 720
    allowed_projects:
    - materials-screening
    optional_batch_job_params:
        filesystems: 'home:scratch'
    job_template_path: job-template.sh

processing:
    num_workers: 4
    prefetch_depth: 1000

transfers:
    # Trusted remote locations, alias: protocol://address
    transfer_locations:
        beamline_dtn: globus://514833eb-832c-4238-8130-89999f607143
        archive_dtn: globus://0E8A2C4D-5B6F-4A1E-9D3C-2B1A0F9E8D7C
    globus_endpoint_id: 7f3e9a10-1c2d-4b5e-8f60-a1b2c3d4e5f6
    max_concurrent_transfers: 3
    transfer_batch_size: 50
    num_items_query_limit: 2000
    service_period: 5

elastic_queue: null

queue_maintainer: null
# queue_maintainer:
#     submit_period: 60
#     num_queued_jobs: 5

file_cleaner: null
"""

# The short per-machine description Balsam keeps beside its site template: flat
# keys, no transfers section, its own Globus endpoint at the top level.
BALSAM_PLATFORM_FILE = """\
title: "Example cluster (imaginary)"

compute_node: balsam.platform.compute_node.PolarisNode
mpi_app_launcher: balsam.platform.app_run.PolarisRun
local_app_launcher: balsam.platform.app_run.LocalAppRun
mpirun_allows_node_packing: true

serial_mode_startup_params:
    cpu_affinity: none

scheduler_class: balsam.platform.scheduler.PBSScheduler
allowed_queues:
    debug:
        max_nodes: 2
        max_queued_jobs: 10
        max_walltime: 60
allowed_projects:
- materials-screening

globus_endpoint_id: 7f3e9a10-1c2d-4b5e-8f60-a1b2c3d4e5f6
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(path: Path) -> str:
    """Load ``path``, expecting a refusal; return its message, checked as one line."""
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


# --- defaults -------------------------------------------------------------------------


def test_empty_file_loads_as_all_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    site = load_settings(path)

    assert site.path == path
    assert site.transfers == TransferSettings()
    assert site.locations == {}
    assert site.from_file == frozenset()
    assert site.ignored_sections == ()


def test_defaults_are_balsams_plus_safe_additions() -> None:
    defaults = TransferSettings()

    assert defaults.transfer_locations == {}
    assert defaults.globus_endpoint_id is None
    assert defaults.globus_endpoint_site_path is None
    assert defaults.max_concurrent_transfers == 5
    assert defaults.transfer_batch_size == 100
    assert defaults.num_items_query_limit == 2000
    assert defaults.service_period == 5
    assert (defaults.retry_limit, defaults.retry_backoff) == (3, 30)
    assert defaults.retry_backoff_max == 900
    assert defaults.local_workers == 4
    assert defaults.globus_sync_level is None
    assert defaults.globus_verify_checksum is True
    assert defaults.globus_encrypt_data is True
    assert defaults.globus_skip_source_errors is True
    assert defaults.globus_deadline_hours is None
    assert defaults.globus_client_id is None
    assert defaults.globus_poll_interval == 2


def test_file_of_comments_only_loads_as_defaults(tmp_path: Path) -> None:
    site = load_settings(write(tmp_path, "# nothing set yet\n\n# transfers: null\n"))

    assert site.transfers == TransferSettings()


def test_file_without_transfers_section_keeps_transfers_on(tmp_path: Path) -> None:
    site = load_settings(write(tmp_path, "processing:\n    num_workers: 2\n"))

    assert site.transfers == TransferSettings()
    assert site.ignored_sections == ("processing",)


def test_empty_transfers_mapping_means_all_transfer_defaults(tmp_path: Path) -> None:
    site = load_settings(write(tmp_path, "transfers: {}\n"))

    assert site.transfers == TransferSettings()
    assert site.from_file == frozenset()


@pytest.mark.parametrize(
    "text", ["transfers: null\n", "transfers:\n", "transfers: ~\n"]
)
def test_null_transfers_turns_transfers_off(tmp_path: Path, text: str) -> None:
    site = load_settings(write(tmp_path, "logging:\n    level: INFO\n" + text))

    assert site.transfers is None
    assert site.locations == {}
    assert site.ignored_sections == ("logging",)
    assert site.effective() == [("transfers", None, "file")]


def test_effective_names_where_each_value_came_from(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            max_concurrent_transfers: 2
            retry_limit: 0
        """,
    )

    rows = load_settings(path).effective()

    assert [key for key, _, _ in rows] == list(TransferSettings.model_fields)
    by_key = {key: (value, origin) for key, value, origin in rows}
    assert by_key["max_concurrent_transfers"] == (2, "file")
    assert by_key["retry_limit"] == (0, "file")
    assert by_key["transfer_batch_size"] == (100, "default")
    assert by_key["globus_encrypt_data"] == (True, "default")


# --- Balsam's own files ---------------------------------------------------------------


def test_full_balsam_site_file_loads_and_lists_other_sections(tmp_path: Path) -> None:
    path = write(tmp_path, BALSAM_SITE_FILE)

    site = load_settings(path)

    assert site.transfers is not None
    assert site.transfers.max_concurrent_transfers == 3
    assert site.transfers.transfer_batch_size == 50
    assert site.transfers.globus_endpoint_id == "7f3e9a10-1c2d-4b5e-8f60-a1b2c3d4e5f6"
    assert site.from_file == {
        "transfer_locations",
        "globus_endpoint_id",
        "max_concurrent_transfers",
        "transfer_batch_size",
        "num_items_query_limit",
        "service_period",
    }
    assert site.ignored_sections == (
        "site_id",
        "logging",
        "filter_tags",
        "launcher",
        "scheduler",
        "processing",
        "elastic_queue",
        "queue_maintainer",
        "file_cleaner",
    )


def test_balsam_globus_locations_are_parsed_with_canonical_ids(tmp_path: Path) -> None:
    site = load_settings(write(tmp_path, BALSAM_SITE_FILE))

    assert set(site.locations) == {"beamline_dtn", "archive_dtn"}
    archive = site.locations["archive_dtn"]
    assert archive.protocol == "globus"
    assert archive.netloc == "0e8a2c4d-5b6f-4a1e-9d3c-2b1a0f9e8d7c"


def test_balsam_platform_description_loads_with_everything_ignored(
    tmp_path: Path,
) -> None:
    site = load_settings(write(tmp_path, BALSAM_PLATFORM_FILE))

    assert site.transfers == TransferSettings()
    assert site.ignored_sections == (
        "title",
        "compute_node",
        "mpi_app_launcher",
        "local_app_launcher",
        "mpirun_allows_node_packing",
        "serial_mode_startup_params",
        "scheduler_class",
        "allowed_queues",
        "allowed_projects",
        "globus_endpoint_id",
    )


def test_ignored_sections_are_never_interpreted(tmp_path: Path) -> None:
    # A tag the safe loader cannot build, and a Jinja placeholder left in by hand:
    # neither concerns transfers, so neither may stop the site from loading.
    path = write(
        tmp_path,
        """\
        site_id: {{ site_id }}
        launcher:
            compute_node: !!python/name:balsam.platform.compute_node.DefaultNode
        transfers:
            service_period: 10
        """,
    )

    site = load_settings(path)

    assert site.transfers is not None
    assert site.transfers.service_period == 10
    assert site.ignored_sections == ("site_id", "launcher")


def test_local_locations_with_and_without_host_are_both_accepted(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            transfer_locations:
                bare: local:///scratch/inputs
                hosted: local://localhost/scratch/inputs
        """,
    )

    locations = load_settings(path).locations

    assert locations["bare"].root == locations["hosted"].root == "/scratch/inputs"
    assert locations["bare"].is_local and locations["hosted"].is_local


def test_empty_transfer_locations_key_means_no_locations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            transfer_locations:
            #   scratch: local:///scratch
            service_period: 3
        """,
    )

    site = load_settings(path)

    assert site.locations == {}
    assert site.transfers is not None and site.transfers.transfer_locations == {}


# --- the files shipped with the project -----------------------------------------------


def test_example_settings_at_repo_root_loads_with_every_key_given() -> None:
    site = load_settings(REPO_ROOT / "settings.yml")

    assert site.transfers is not None
    assert site.from_file == set(TransferSettings.model_fields)
    assert {location.protocol for location in site.locations.values()} == {
        "globus",
        "local",
    }


def test_bundled_default_settings_load(tmp_path: Path) -> None:
    text = default_settings_text()

    site = parse_settings_text(text, source="<bundled>")

    assert site.path is None
    assert site.transfers is not None
    assert site.ignored_sections == ()
    path = write(tmp_path, text)
    assert load_settings(path).transfers == site.transfers


# --- one-line errors with file, line and key ------------------------------------------


def test_unknown_transfer_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        scheduler: null
        transfers:
            service_period: 5
            max_concurent_transfers: 2
        """,
    )

    message = refused(path)

    assert message == (
        f"{path}:4: transfers.max_concurent_transfers: unknown key "
        "(did you mean max_concurrent_transfers?)"
    )


def test_negative_number_names_the_limit_and_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        # site settings
        transfers:
            transfer_batch_size: 10
            max_concurrent_transfers: -2
        """,
    )

    message = refused(path)

    assert message == (
        f"{path}:4: transfers.max_concurrent_transfers: must be at least 1 (got -2)"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("service_period: 0", "transfers.service_period: must be more than 0 (got 0)"),
        ("retry_limit: -1", "transfers.retry_limit: must be at least 0 (got -1)"),
        ("retry_backoff: .inf", "transfers.retry_backoff: must be a finite number"),
    ],
)
def test_out_of_range_numbers_are_refused(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write(tmp_path, f"transfers:\n    {line}\n")

    assert refused(path).startswith(f"{path}:2: {expected}")


def test_bad_uuid_is_refused_on_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            max_concurrent_transfers: 5
            globus_endpoint_id: alcf#dtn_home
        """,
    )

    message = refused(path)

    assert message.startswith(f"{path}:3: transfers.globus_endpoint_id: ")
    assert "'alcf#dtn_home' is not a UUID" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_concurrent_transfers: '5'", "must be a whole number (got '5')"),
        ("transfer_batch_size: 2.5", "must be a whole number (got 2.5)"),
        ("num_items_query_limit: 2.0", "must be a whole number (got 2.0)"),
        ("local_workers: yes", "must be a whole number (got true)"),
        ("service_period: soon", "must be a number (got 'soon')"),
        ("globus_encrypt_data: 'no'", "must be true or false (got 'no')"),
        ("globus_client_id: 42", "must be a string (got 42)"),
        ("globus_sync_level: fast", "or null (got 'fast')"),
        ("transfer_locations: [a, b]", "must be a mapping of alias: URL (got a list)"),
    ],
)
def test_wrong_type_is_refused_naming_the_key(
    tmp_path: Path, line: str, expected: str
) -> None:
    key = line.partition(":")[0]
    path = write(tmp_path, f"title: x\ntransfers:\n    {line}\n")

    message = refused(path)

    assert message.startswith(f"{path}:3: transfers.{key}: ")
    assert message.endswith(expected)


def test_relative_endpoint_site_path_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "transfers:\n    globus_endpoint_site_path: me/site\n")

    assert refused(path).startswith(
        f"{path}:2: transfers.globus_endpoint_site_path: 'me/site' is not an absolute"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("laptop: local://", "transfers.transfer_locations.laptop: "),
        ("laptop: not a url", "transfers.transfer_locations.laptop: "),
        ("laptop: local://otherhost/data", "not host 'otherhost'"),
        ("laptop: globus://alcf#dtn", "is not a Globus endpoint UUID"),
        ("laptop:", "must be a URL"),
        ("'a:b': local:///data", "transfers.transfer_locations.a:b: an alias must not"),
        ("on: local:///data", "quote true if it is meant as one"),
    ],
)
def test_malformed_location_is_refused_on_the_alias_line(
    tmp_path: Path, entry: str, expected: str
) -> None:
    path = write(
        tmp_path,
        f"""\
        transfers:
            transfer_locations:
                good: local:///data
                {entry}
        """,
    )

    message = refused(path)

    assert message.startswith(f"{path}:4: transfers.transfer_locations")
    assert expected in message


def test_unknown_protocol_is_refused_naming_the_alias(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            service_period: 5
            transfer_locations:
                cluster: rsync://login.example.org/data
        """,
    )

    message = refused(path)

    assert message.startswith(f"{path}:4: transfers.transfer_locations.cluster: ")
    assert "unknown protocol 'rsync'" in message


def test_key_given_twice_in_transfers_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            retry_limit: 2
            service_period: 5
            retry_limit: 5
        """,
    )

    assert refused(path) == (
        f"{path}:4: transfers.retry_limit: given twice (also on line 2); keep one"
    )


def test_several_problems_are_joined_on_one_line_in_file_order(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            retry_limit: -1
            bogus: 1
            transfer_locations:
                x: ftp://example.org/data
        """,
    )

    message = refused(path)

    assert message.split("; ") == [
        f"{path}:2: transfers.retry_limit: must be at least 0 (got -1)",
        f"{path}:3: transfers.bogus: unknown key",
        f"{path}:5: transfers.transfer_locations.x: unknown protocol 'ftp' "
        "(use one of globus://, local://)",
    ]


def test_transfers_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "logging: {}\ntransfers: yes\n")

    message = refused(path)

    assert message.startswith(f"{path}:2: transfers: must be a mapping of settings")


def test_bad_yaml_gives_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        transfers:
            service_period: 5
          max_concurrent_transfers: 3
        """,
    )

    message = refused(path)

    assert message.startswith(f"{path}:3: not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("transfers:\n\tservice_period: 5\n", 2),  # a tab for indentation
        ("title: x\nnote: \x07\n", 2),  # a control character
        ("transfers: {}\n---\ntransfers: null\n", 2),  # two documents
        ("transfers:\n    retry_limit: !secret 3\n", 2),  # a tag YAML cannot build
    ],
)
def test_other_yaml_faults_give_file_and_line(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "settings.yml"
    path.write_text(text, encoding="utf-8")

    assert refused(path).startswith(f"{path}:{line}: not valid YAML: ")


def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- transfers\n- scheduler\n")

    assert refused(path) == (
        f"{path}:1: the file must be a mapping of sections such as 'transfers:', "
        "not a list"
    )


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "settings.yml"

    message = refused(path)

    assert message.startswith(f"{path}: settings file not found")


def test_directory_instead_of_file_is_one_clear_line(tmp_path: Path) -> None:
    assert refused(tmp_path / "").startswith(f"{tmp_path}:")


def test_error_carries_where_it_was_found(tmp_path: Path) -> None:
    path = write(tmp_path, "transfers:\n    local_workers: 0\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(path)

    assert isinstance(caught.value, ValueError)
    assert (caught.value.source, caught.value.line) == (str(path), 2)
    assert caught.value.key == "transfers.local_workers"


def test_text_errors_use_the_given_source_name() -> None:
    with pytest.raises(SettingsError, match=r"^<reload>:2: transfers.retry_limit: "):
        parse_settings_text("transfers:\n  retry_limit: x\n", source="<reload>")


# --- the model itself -----------------------------------------------------------------


def test_transfer_settings_are_frozen_and_strict() -> None:
    settings = TransferSettings(max_concurrent_transfers=2)

    with pytest.raises(pydantic.ValidationError):
        settings.max_concurrent_transfers = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        TransferSettings(no_such_key=1)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="unknown protocol"):
        TransferSettings(transfer_locations={"x": "ftp://example.org/data"})


def test_site_settings_locations_cannot_be_changed(tmp_path: Path) -> None:
    site: SiteSettings = load_settings(write(tmp_path, BALSAM_SITE_FILE))

    with pytest.raises(TypeError):
        site.locations["extra"] = site.locations["beamline_dtn"]  # type: ignore[index]


def test_settings_module_imports_neither_textual_nor_rich() -> None:
    probe = (
        "import sys, balsam_tui.settings; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('textual', 'rich')))"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )

    assert result.stdout.strip() == "[]"


# --- balsam_server: a site served from a Balsam server ------------------------------


def test_balsam_server_section_names_the_server_and_the_site(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        balsam_server:
          api_root: https://balsam.example.org/
          site_id: 12
          request_timeout: 10
        transfers:
          service_period: 2
        """,
    )

    site = load_settings(path)

    assert site.server == ServerSettings(
        site_id=12, api_root="https://balsam.example.org", request_timeout=10.0
    )
    assert site.ignored_sections == ()


def test_balsam_site_file_serves_its_own_site_id_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, BALSAM_SITE_FILE + "balsam_server: {}\n")

    site = load_settings(path)

    assert site.server == ServerSettings(site_id=217)
    assert site.server.api_root is None
    assert "site_id" not in site.ignored_sections
    assert "balsam_server" not in site.ignored_sections


def test_without_balsam_server_a_top_level_site_id_stays_ignored(
    tmp_path: Path,
) -> None:
    site = load_settings(write(tmp_path, BALSAM_SITE_FILE))

    assert site.server is None
    assert "site_id" in site.ignored_sections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "balsam_server:\n  api_root: http://x\n",
            ":1: balsam_server.site_id: missing (or give the site's top-level site_id)",
        ),
        (
            "balsam_server:\n  site_id: 3\n  api_rot: http://x\n",
            ":3: balsam_server.api_rot: unknown key (did you mean api_root?)",
        ),
        (
            "balsam_server:\n  site_id: 3\n  api_root: balsam.example.org\n",
            ":3: balsam_server.api_root: 'balsam.example.org' is not an http:// "
            "or https:// URL",
        ),
        (
            "site_id: '{{ site_id }}'\nbalsam_server: {}\n",
            ":1: site_id: must be a whole number (got '{{ site_id }}')",
        ),
        (
            "balsam_server: [1]\n",
            ":1: balsam_server: must be a mapping with site_id and api_root, or null "
            "(got a list)",
        ),
    ],
)
def test_bad_balsam_server_section_is_refused_on_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)

    assert refused(path) == f"{path}{expected}"
