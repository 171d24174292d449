"""One database transaction per use case, owned by the service layer rather than the caller."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.orm import Session

from orders_api.adapters.repository import SqlAlchemyOrderRepository
from orders_api.domain import Order


class OrderRepository(Protocol):
    """What the use cases need from order storage."""

    def add(self, order: Order) -> None:
        """Store a new order and keep its creation lock until the transaction ends."""

    def wait_for_creation(self, order_id: uuid.UUID) -> None:
        """Wait until the transaction creating ``order_id`` has ended."""

    def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """Load an order, or ``None`` when it was never committed."""

    def update(self, order: Order) -> None:
        """Persist the changeable fields of ``order``."""


class UnitOfWork(Protocol):
    """A transaction: work is rolled back unless :meth:`commit` is called before leaving."""

    @property
    def orders(self) -> OrderRepository:
        """The orders, read and written within this transaction."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Roll back whatever was not committed and release the connection."""

    def commit(self) -> None:
        """Commit the transaction."""


class SqlAlchemyUnitOfWork:
    """A unit of work over a fresh SQLAlchemy session per use, never shared between threads."""

    orders: SqlAlchemyOrderRepository

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        self._session = self._session_factory()
        self.orders = SqlAlchemyOrderRepository(self._session)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._session.rollback()
        self._session.close()

    def commit(self) -> None:
        """Commit; raises if PostgreSQL did not confirm it, in which case the outcome may be unknown."""
        self._session.commit()
