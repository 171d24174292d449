"""Every role's settings: each variable declared once, typed and described; a bad value is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange_simulator.feed.cli import parse_args
from orders_api.settings import check, table
from orders_api.settings.base import load
from orders_api.settings.feed import FeedSettings
from orders_api.settings.logs import LoggingSettings
from orders_api.settings.roles import ROLES
from orders_api.settings.shared import Settings
from tests.settings_env import environment, settings_under

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIELDS = {name: field for role in ROLES for name, field in role.settings.model_fields.items()}


def refusal(cls: type[Settings] | type[FeedSettings] | type[LoggingSettings], env: dict[str, str]) -> str:
    """What the start of a process reading ``cls`` under ``env`` prints before it exits."""
    with environment(cls, env), pytest.raises(SystemExit) as stopped:
        load(cls)
    return str(stopped.value.code)


def test_a_value_of_the_wrong_type_stops_the_start_with_one_line_naming_the_variable() -> None:
    assert refusal(Settings, {"DB_POOL_SIZE": "lots"}) == (
        "configuration error: DB_POOL_SIZE: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    )


def test_a_value_out_of_its_range_is_refused_too() -> None:
    assert refusal(Settings, {"STATEMENT_TIMEOUT_MS": "0"}) == (
        "configuration error: STATEMENT_TIMEOUT_MS: Input should be greater than 0 (got '0')"
    )


def test_every_bad_variable_gets_a_line_of_its_own() -> None:
    lines = refusal(Settings, {"DB_POOL_SIZE": "lots", "DB_POOL_PRE_PING": "maybe"}).splitlines()

    assert [line.split(": ")[1] for line in lines] == ["DB_POOL_SIZE", "DB_POOL_PRE_PING"]


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("TRUE", True),
    ],
)
def test_a_boolean_is_any_of_the_usual_spellings(value: str, on: bool) -> None:
    """``DB_POOL_PRE_PING=true`` used to mean off: only ``1`` counted."""
    assert settings_under(Settings, {"DB_POOL_PRE_PING": value}).db_pool_pre_ping is on
    assert settings_under(FeedSettings, {"FEED_CLEAN": value}).feed_clean is on


def test_an_empty_variable_counts_as_unset() -> None:
    settings = settings_under(Settings, {"DB_POOL_SIZE": "", "RABBITMQ_MANAGEMENT_URL": ""})

    assert (settings.db_pool_size, settings.rabbitmq_management_url) == (32, None)


def test_the_log_format_and_level_take_any_case_and_refuse_what_they_do_not_know() -> None:
    settings = settings_under(LoggingSettings, {"LOG_FORMAT": " Text ", "LOG_LEVEL": "debug"})

    assert (settings.log_format, settings.log_level) == ("text", "DEBUG")
    assert refusal(LoggingSettings, {"LOG_FORMAT": "pretty"}).startswith("configuration error: LOG_FORMAT: ")
    assert refusal(LoggingSettings, {"LOG_LEVEL": "loud"}).startswith(
        "configuration error: LOG_LEVEL: not a logging level; one of CRITICAL, "
    )


def test_a_feed_flag_wins_over_its_variable_and_is_checked_alike() -> None:
    with environment(FeedSettings, {"FEED_PORT": "9000", "FEED_BATCH": "5"}):
        settings = parse_args(["--port", "9001", "--clean"])
        with pytest.raises(SystemExit) as stopped:
            parse_args(["--batch", "0"])

    assert (settings.feed_port, settings.feed_batch, settings.feed_clean) == (9001, 5, True)
    assert str(stopped.value.code) == (
        "configuration error: FEED_BATCH: Input should be greater than or equal to 1 (got '0')"
    )


def test_every_variable_is_declared_once() -> None:
    """Each field is declared by one class only, which the role classes compose."""
    for name in FIELDS:
        declaring = {
            cls.__qualname__
            for role in ROLES
            for cls in role.settings.__mro__
            if name in getattr(cls, "__annotations__", {})
        }
        assert len(declaring) == 1, f"{name.upper()} is declared by {sorted(declaring)}"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_variable_has_a_default_a_description_and_a_number_if_it_has_a_unit(name: str) -> None:
    field = FIELDS[name]

    assert not field.is_required(), name
    assert field.description, name
    if name.endswith(("_s", "_ms")):
        assert field.annotation in (int, float), name


def test_the_defaults_start_every_role() -> None:
    with environment(Settings, {}):
        for role in ROLES:
            with environment(role.settings, {}):
                load(role.settings)


def test_the_check_names_each_problem_once_for_all_the_roles_that_read_it() -> None:
    """``make run`` runs it first: every role but the feed simulator reads ``DB_POOL_SIZE``."""
    with pytest.MonkeyPatch.context() as patch:
        for name in FIELDS:
            patch.delenv(name.upper(), raising=False)
        assert check.problems() == []
        patch.setenv("DB_POOL_SIZE", "lots")
        patch.setenv("WORKER_THREADS", "0")

        problems = check.problems()

    assert [line.split(": ")[:2] for line in problems] == [
        ["configuration error", "DB_POOL_SIZE"],
        ["configuration error", "WORKER_THREADS"],
    ]


def test_the_table_in_the_docs_is_the_one_the_settings_generate() -> None:
    """``make settings-table`` writes it."""
    document = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")

    assert table.between_markers(document) == table.render(), "run `make settings-table`"


def test_the_table_goes_between_the_markers_and_leaves_the_rest_alone() -> None:
    document = f"intro\n\n{table.START}\nold\n{table.END}\n\nmore prose\n"

    assert table.rewritten(document, "new") == f"intro\n\n{table.START}\nnew\n{table.END}\n\nmore prose\n"
    with pytest.raises(ValueError, match=r"markers|line"):
        table.rewritten("no markers", "new")
