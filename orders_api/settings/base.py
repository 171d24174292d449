"""What every settings class shares, and the one way a process reads its settings: :func:`load`.

A process reads its role's class (:mod:`orders_api.settings.roles`) once, at start. Each field is
the environment variable of its own name, upper-cased (``db_pool_size`` is ``DB_POOL_SIZE``), so
a variable is declared once, with its type, default and description, and the docs table is
generated from the classes (:mod:`orders_api.settings.table`).

A value that does not fit, or settings that break a rule between fields, stop the start with
exit status 1 and one line each on stderr, naming the variable and the rule, and no traceback:
``SystemExit`` with a message, which Python prints as it is, and which gunicorn (loading its
config), Flask's CLI (loading the app) and the console scripts let through.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

#: What starts the line of a variable whose value does not fit.
COMPLAINT = "configuration error"

_Settings = TypeVar("_Settings", bound=BaseSettings)


class SettingsBase(BaseSettings):
    """Immutable, read from the environment only, an empty variable counting as unset.

    Empty as unset: a manifest's ``VAR: ""`` or a shell's ``VAR=`` then means the default, as it
    already did for ``BIND`` and the optional files, rather than an error or an empty name.
    """

    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True)


def load(cls: type[_Settings], **given: object) -> _Settings:
    """``cls`` read from the environment; exit 1 with one line per problem if it does not validate.

    ``given`` (a command's flags, by field) wins over the environment and is validated alike.
    """
    # BaseSettings' own keyword arguments (``_env_file``...) are typed; fields go through ``**values``.
    values: dict[str, Any] = dict(given)
    try:
        return cls(**values)
    except ValidationError as error:
        raise SystemExit("\n".join(complaints(error))) from None


def complaints(error: ValidationError) -> Iterator[str]:
    """One line per bad variable: ``configuration error: NAME: rule (got 'value')``.

    A rule between fields (:mod:`orders_api.settings.shared`) words its own lines.
    """
    for problem in error.errors(include_url=False):
        if problem["loc"]:
            name = str(problem["loc"][0]).upper()
            yield f"{COMPLAINT}: {name}: {problem['msg']} (got {problem['input']!r})"
        else:
            yield from str(problem["msg"]).splitlines()


def temporary_file(name: str) -> Path:
    """``name`` in the system's temporary directory: where heartbeats and the feed's log go by default."""
    return Path(tempfile.gettempdir()) / name
