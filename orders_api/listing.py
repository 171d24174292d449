"""What a client may ask of the list of orders: filters and a position, free of any framework.

Orders are listed newest first, by ``(created_at, id)``: the id breaks ties between orders
created in the same microsecond, so the order is total and a page that starts strictly after
the last order of the previous one neither repeats nor skips an order, however many are added
meanwhile (new orders come before the first page, not inside the ones already read).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from orders_api.domain import OrderStatus

#: Orders per page unless the client asks for another number.
DEFAULT_PAGE_SIZE = 50
#: Orders per page at most.
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class ListPosition:
    """The last order of a page: the next page starts with the order just older than it."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class OrderListing:
    """One page of the list of orders: the filters, where to start, and how many at most."""

    status: OrderStatus | None = None
    instrument: str | None = None
    #: Orders created at or after this instant only.
    created_after: datetime | None = None
    #: Orders created before this instant only.
    created_before: datetime | None = None
    after: ListPosition | None = None
    limit: int = DEFAULT_PAGE_SIZE
