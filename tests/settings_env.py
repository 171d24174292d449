"""Settings classes read under an environment a test chooses, the way a process of that role reads them.

``settings_under`` goes through the real path, the environment, with none of the runner's own
variables for the class's fields (:func:`orders_testkit.unchecked_settings.unchecked` skips the
rules between fields, for tests that look at settings out of order on purpose).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import pytest

from orders_api.settings.base import SettingsBase
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings

_Settings = TypeVar("_Settings", bound=SettingsBase)


@contextmanager
def environment(cls: type[SettingsBase], env: Mapping[str, str]) -> Iterator[None]:
    """An environment holding ``env`` and none of the runner's values for ``cls``' fields."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.lower() in cls.model_fields:
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def settings_under(cls: type[_Settings], env: Mapping[str, str]) -> _Settings:
    """``cls`` read from :func:`environment`."""
    with environment(cls, env):
        return cls()


def workers_on(settings: Settings, **overrides: object) -> WorkerSettings:
    """Worker settings on ``settings``' database, broker and queue, with ``overrides`` by field.

    Not validated: tests shorten leases and backoffs below what the rules allow a real start.
    """
    return WorkerSettings.model_construct(**{**settings.model_dump(), **overrides})
