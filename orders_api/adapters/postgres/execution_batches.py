"""The applier's writes: a batch of execution reports in one transaction, or report by report.

One transaction per batch is what makes the applier fast (one COMMIT for hundreds of reports).
But a report whose data the database or its driver refuses fails the same way on every try of
its batch, and a batch retried forever stalls every partition behind that one report. So when
the batch fails on its data, it is applied again one report per transaction, and a report
refused alone is handed back to be dropped; the ledger (unique ``exec_id``) makes the reports
that committed alone harmless when the batch is tried again. Any other error (PostgreSQL away,
a lock timeout) propagates: the caller retries the batch whole until it commits.

"Refused on its data" is SQLSTATE class 22 (``DataError``: a numeric overflow from an absurd
fill, say) and a bare ``ValueError`` (``UnicodeEncodeError`` is one), which psycopg2 raises
while it encodes a parameter it cannot send, such as text holding a NUL character or a lone
surrogate, before any SQLAlchemy error wraps it. The contract's parser rejects those two
already (:func:`orders_api.executions.report_from_fields`); this is the second line, so that
whatever else one report holds, it cannot stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from orders_api.adapters.postgres.execution_ledger import AppliedBatch, apply_reports, merged
from orders_api.executions import ExecutionReport, fields_of

logger = logging.getLogger(__name__)

#: What a batch fails with when one of its reports holds data the database cannot take.
REFUSED_DATA_ERRORS: tuple[type[Exception], ...] = (sa.exc.DataError, ValueError)


@dataclass(frozen=True)
class BatchOutcome:
    """What applying a batch did, and the reports refused alone (logged whole, to be dropped)."""

    applied: AppliedBatch
    refused: list[ExecutionReport]


def apply_batch(engine: sa.Engine, reports: Sequence[ExecutionReport]) -> BatchOutcome:
    """Apply ``reports`` in one transaction, or one per report if the batch is refused on its data.

    :raises sqlalchemy.exc.SQLAlchemyError: any failure but refused data; nothing of the batch
        is committed then, except reports committed alone, which a retry finds applied.
    """
    try:
        with engine.begin() as db:
            return BatchOutcome(apply_reports(db, reports), [])
    except REFUSED_DATA_ERRORS as error:
        logger.error(
            "the database refused a batch's data; applying its reports one at a time",
            extra={"error": str(error), "reports": len(reports)},
        )
    outcomes, refused = [], []
    for report in reports:
        try:
            with engine.begin() as db:
                outcomes.append(apply_reports(db, [report]))
        except REFUSED_DATA_ERRORS as error:
            logger.error(
                "execution report refused by the database, dropped",
                extra={"error": str(error), "report": fields_of(report)},
            )
            refused.append(report)
    return BatchOutcome(merged(outcomes), refused)
