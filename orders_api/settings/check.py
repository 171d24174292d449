"""``python -m orders_api.settings.check``: validate every role's settings in the environment at once.

``make run`` runs it first: its supervisor restarts a process that exits, so a role refusing a
bad value would otherwise be restarted for ever instead of stopping the run with one line.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from orders_api.settings.base import complaints
from orders_api.settings.roles import ROLES


def problems() -> list[str]:
    """Every complaint of any role about the environment, each once, in the roles' order."""
    found: dict[str, None] = {}
    for role in ROLES:
        try:
            role.settings()
        except ValidationError as error:
            found.update(dict.fromkeys(complaints(error)))
    return list(found)


def main() -> None:
    """Exit 1 with one line per problem if any role would refuse to start, else say nothing."""
    if lines := problems():
        sys.exit("\n".join(lines))


if __name__ == "__main__":
    main()
