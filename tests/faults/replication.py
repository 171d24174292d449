"""A PostgreSQL primary with one synchronous standby, private to the fault suite, and its failover.

Production runs one synchronous standby (CloudNativePG, ``dataDurability: required``): a COMMIT
returns only once the standby has flushed it. This pair models that on one machine: the primary
is ``initdb``'d, the standby is its ``pg_basebackup -R`` copy, both on free ports in temporary
directories, and the primary names the standby in ``synchronous_standby_names`` on its command
line only, so that the standby, once promoted, does not wait for a standby of its own.

A failover here is the primary's machine dying with the standby behind: :meth:`kill_both` SIGKILLs
every process of both clusters. The standby is killed too because on the loopback its kernel
would still hand it, after a mere SIGCONT, all the WAL the primary had sent into its socket,
which a real partition or crash loses; killed, it keeps exactly what it had written, which
includes every commit it acknowledged. :meth:`promote_standby` then starts it on the primary's
port, as a Service moves to the new primary, and promotes it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass

import psycopg2

from tests.faults.servers import (
    PrivatePostgres,
    ServerError,
    free_ports,
    owned_temporary_directory,
    postgres_bindir,
)

#: The standby's ``application_name``, which the primary's ``synchronous_standby_names`` holds.
STANDBY_NAME = "orders_standby"
#: Seconds the standby has to report itself ``sync`` to the primary.
SYNC_TIMEOUT_S = 30.0


@dataclass
class ReplicatedPostgres:
    """The pair; ``promoted`` is the standby once it has taken the primary's place."""

    primary: PrivatePostgres
    standby: PrivatePostgres
    promoted: PrivatePostgres | None = None

    def wait_until_synchronous(self) -> None:
        """Wait until the primary streams to the standby as its synchronous standby."""
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        state = None
        while time.monotonic() < deadline:
            with (
                closing(psycopg2.connect(f"{self.primary.url}/postgres", connect_timeout=5)) as connection,
                connection.cursor() as cursor,
            ):
                cursor.execute(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (STANDBY_NAME,)
                )
                row = cursor.fetchone()
            state = row[0] if row else None
            if state == "sync":
                return
            time.sleep(0.2)
        raise ServerError(f"the standby is not synchronous within {SYNC_TIMEOUT_S:.0f} s (state {state})")

    def kill_both(self) -> None:
        """SIGKILL every process of the primary, then of the standby (frozen or not)."""
        self.primary.kill()
        self.standby.kill()

    def promote_standby(self) -> PrivatePostgres:
        """Start the killed standby on the primary's port, with no upstream, and promote it."""
        promoted = PrivatePostgres(
            postgres_bindir(),
            self.standby.directory,
            self.primary.port,
            {"primary_conninfo": "", "cluster_name": STANDBY_NAME},
        )
        promoted.start()
        self.promoted = promoted
        promoted.promote()
        return promoted


@contextmanager
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A primary and its synchronous standby, streaming, for the block; stopped and deleted after it."""
    bindir = postgres_bindir()
    primary_port, standby_port = free_ports(2)
    primary_directory = owned_temporary_directory("orders-faults-primary-", "postgres")
    standby_directory = owned_temporary_directory("orders-faults-standby-", "postgres")
    primary = PrivatePostgres(
        bindir, primary_directory, primary_port, {"synchronous_standby_names": STANDBY_NAME}
    )
    standby = PrivatePostgres(bindir, standby_directory, standby_port, {"cluster_name": STANDBY_NAME})
    pair = ReplicatedPostgres(primary, standby)
    try:
        primary.initialise()
        primary.start()
        standby.copy_of(primary)
        standby.start()
        pair.wait_until_synchronous()
        yield pair
    finally:
        for server in (pair.promoted, standby, primary):
            if server is not None:
                with suppress(ServerError):
                    server.shut_down()
        for directory in (primary_directory, standby_directory):
            shutil.rmtree(directory, ignore_errors=True)
