"""Settings read with the rules between their fields unchecked, for processes run out of order on purpose.

The fault suite, the benchmark and some end-to-end tests shorten leases and time limits below
what a real start allows, to see them lapse; each variable is still parsed as its field parses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, cast

from pydantic import TypeAdapter

from orders_api.settings.base import SettingsBase

_Settings = TypeVar("_Settings", bound=SettingsBase)


def unchecked(cls: type[_Settings], env: Mapping[str, str] | None = None) -> _Settings:
    """``cls``' defaults with ``env``'s variables for its fields, each parsed as its field parses it.

    No rule between fields is checked, and the runner's environment plays no part.
    """
    values = {}
    for name, value in (env or {}).items():
        field = cls.model_fields.get(name.lower())
        if field is not None:
            kind: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            values[name.lower()] = TypeAdapter(kind).validate_python(value)
    # The pydantic plugin types model_construct by the class defining it, not by ``cls``.
    return cast(_Settings, cls.model_construct(**values))
