"""The composition point of the workers: broker, database and exchange, wired once per process."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware.prometheus import Prometheus

from exchange_simulator import stock_exchange
from orders_api.adapters.postgres.database import bound_database_waits, create_engine
from orders_api.adapters.postgres.unit_of_work import SqlAlchemyUnitOfWork
from orders_api.adapters.rabbitmq.placement_queue import PLACE_ORDER_ACTOR
from orders_api.domain import ClaimHeldError, Order
from orders_api.service_layer.claims import ClaimKeeper
from orders_api.service_layer.placement import (
    Exchange,
    UnloadableOrderError,
    mark_failed,
    parse_order_id,
)
from orders_api.settings.workers import WorkerSettings
from workers.answer_courier import answer_courier, declare_record_answer_actor
from workers.broker import create_broker
from workers.claim_renewal import ClaimRenewal
from workers.metrics import WorkerMetrics
from workers.placement_actor import after_claim_ms, declare_place_order_actor, exchange_breaker
from workers.retries import GiveUpDeferredError
from workers.time_limit import LiftableTimeLimit

logger = logging.getLogger(__name__)

#: How the workers' database connections are named in ``pg_stat_activity``.
APPLICATION_NAME = "orders-worker"


def logged_exchange(order: Order) -> None:
    """Call the stock exchange, logging each call and each success so that calls can be counted."""
    logger.info("exchange call for order %s", order.id)
    stock_exchange.place_order(order)
    logger.info("exchange placed order %s", order.id)


def bootstrap(
    settings: WorkerSettings, exchange: Exchange = logged_exchange, *, metrics: bool = False
) -> dramatiq.Broker:
    """Build the broker with the ``place_order`` actor declared on it, and make it the global broker.

    Nothing connects here: the engines and the broker open connections on first use, and the
    claim renewals start when the worker boots.

    With ``metrics``, Dramatiq's Prometheus middleware and :class:`workers.metrics.WorkerMetrics`
    are wired in: only for processes run by Dramatiq's CLI, which boots the middleware (its
    metrics are created in ``after_process_boot``) and starts its exposition server.
    """
    observer = WorkerMetrics() if metrics else None
    # Bounds every database wait, and under gevent lets the other greenlets run meanwhile.
    bound_database_waits(settings.db_reply_timeout_s)
    # Every write of the placement use cases is one compare-and-set statement that stands alone,
    # so the workers' connections run in autocommit: no BEGIN and COMMIT round trips around them.
    engine = create_engine(
        settings, pool_size=settings.worker_db_pool_size, application_name=APPLICATION_NAME, autocommit=True
    )
    # Claims are renewed on a connection of their own: placements exhausting the pool must not
    # delay a renewal, or their claims would expire under them.
    renewal_engine = create_engine(
        settings, pool_size=1, application_name=f"{APPLICATION_NAME}-claims", autocommit=True
    )

    def unit_of_work() -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(engine)

    def give_up(message: dramatiq.MessageProxy, error: BaseException) -> None:
        """Fail the message's order; count the message as dead-lettered unless it is to be retried."""
        try:
            fail_order(message, error)
        except GiveUpDeferredError:
            raise
        except Exception:
            if observer is not None:
                observer.gave_up(error)
            raise
        if observer is not None:
            observer.gave_up(error)

    def fail_order(message: dramatiq.MessageProxy, error: BaseException) -> None:
        if message.actor_name != PLACE_ORDER_ACTOR:
            logger.error("dead-lettered message %s of %s: %s", message.message_id, message.actor_name, error)
            return
        try:
            order_id = parse_order_id(message.args[0] if message.args else None)
        except UnloadableOrderError:
            order_id = None
        try:
            failed = order_id is not None and mark_failed(order_id, unit_of_work(), error)
        except ClaimHeldError as held:
            raise GiveUpDeferredError(str(held), retry_after_ms=after_claim_ms(held)) from held
        if not failed:
            logger.warning("dead-lettered message %s names no pending order", message.message_id)

    claims = ClaimKeeper(lambda: SqlAlchemyUnitOfWork(renewal_engine), settings.claim_lease)
    time_limit = LiftableTimeLimit()
    broker = create_broker(
        settings,
        on_give_up=give_up,
        time_limit=time_limit,
        claim_renewal=ClaimRenewal(claims),
        extra_middleware=[Prometheus()] if metrics else [],
    )
    dramatiq.set_broker(broker)
    record_answer = declare_record_answer_actor(broker, settings, unit_of_work, observer)
    declare_place_order_actor(
        broker,
        settings,
        unit_of_work,
        exchange,
        breaker=exchange_breaker(settings, on_change=observer.breaker_changed if observer else None),
        claims=claims,
        time_limit=time_limit,
        courier=answer_courier(record_answer),
        observer=observer,
    )
    return broker
