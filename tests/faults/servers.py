"""Private PostgreSQL and RabbitMQ servers for the fault-injection suite, started and stopped within bounds.

The fault scenarios stop and restart the servers, and the machine's own servers (5432, 5672) are
shared with other developers and test runs, so the suite never touches them: it starts a
PostgreSQL cluster and a RabbitMQ node of its own, on free ports, with their data in a
temporary directory, and restarts only those. Both run under the service's own OS user
(``postgres``, ``rabbitmq``) when the suite runs as root, since ``initdb`` refuses root and
Debian's RabbitMQ scripts switch to ``rabbitmq`` (whose Erlang cookie ``rabbitmqctl`` then
shares). A server that does not come up fails loudly with the tail of its log.

Either server can also be *frozen*: SIGSTOP to each of its OS processes, SIGCONT to all of them
when the block ends, whatever ends it. A frozen server keeps its sockets open and its kernel
still accepts connections, but nothing answers: the fault that only client-side timeouts notice.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import requests

#: Seconds a server has to start (RabbitMQ took ~13 s here) or to stop.
SERVER_START_TIMEOUT_S = 60
#: Seconds one ``rabbitmqctl`` or ``pg_ctl`` command may take, beyond the wait it is asked for.
COMMAND_MARGIN_S = 15
#: Lines of a server's log shown when it misbehaves.
LOG_TAIL_LINES = 40
#: The RabbitMQ user the suite connects as: RabbitMQ's default, allowed from the loopback only.
RABBITMQ_USER = ("guest", "guest")
#: Seconds each process has to reach the stopped state after SIGSTOP (one in uninterruptible
#: sleep, say an fsync, stops only once that ends).
FREEZE_TIMEOUT_S = 5.0
#: Processes never frozen even when they descend from a frozen server: the Erlang port mapper,
#: which the private node shares with the machine's own node.
NEVER_FROZEN = frozenset({"epmd"})


class ServerError(AssertionError):
    """A private server did not start, restart or stop in time; the message carries its log's tail."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (the kernel picks them)."""
    with ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error})"
    return f"----- last {lines} lines of {path} -----\n" + "\n".join(text.splitlines()[-lines:])


def _as_user(user: str, command: list[str]) -> list[str]:
    """``command`` run as ``user`` when this process is root, as itself otherwise."""
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else command


def owned_temporary_directory(prefix: str, user: str) -> Path:
    """A new temporary directory that ``user`` owns (when this process is root and can give it away)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(directory, user, user)
    return directory


def _run(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    """Run ``command`` to the end within ``timeout_s``; return its output, raise with it on failure."""
    try:
        finished = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        raise ServerError(f"{' '.join(command)} did not finish within {timeout_s:.0f} s") from expired
    output = finished.stdout.decode("utf-8", errors="replace")
    if finished.returncode != 0:
        raise ServerError(f"{' '.join(command)} exited with {finished.returncode}:\n{output}")
    return output


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: ``/proc/<pid>/task/*/children``)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            children.extend(int(child) for child in (task / "children").read_text().split())
    return children


def _command_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """The process's state letter (``T`` stopped, ``Z`` zombie...), ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and parentheses.
    return stat[stat.rindex(")") + 2]


def _await_stopped(pid: int, deadline: float) -> None:
    while (state := _state(pid)) not in (None, "T", "t", "Z", "X"):
        if time.monotonic() >= deadline:
            raise ServerError(f"process {pid} ({_command_name(pid)}) still in state {state} after SIGSTOP")
        time.sleep(0.01)


def _await_dead(pid: int, deadline: float) -> None:
    while (state := _state(pid)) not in (None, "Z", "X"):
        if time.monotonic() >= deadline:
            raise ServerError(f"process {pid} ({_command_name(pid)}) still in state {state} after SIGKILL")
        time.sleep(0.01)


@contextmanager
def process_tree_frozen(root_pid: int) -> Iterator[list[int]]:
    """SIGSTOP ``root_pid`` and every process descending from it for the block; SIGCONT them after.

    Each process is stopped, and seen stopped, before its children are listed, so none can fork
    one unseen. Whatever ends the block (its end, an exception, a failed freeze), every process
    stopped gets SIGCONT. Yields the pids stopped, root first.
    """
    stopped: list[int] = []
    try:
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        to_stop = [root_pid]
        while to_stop:
            pid = to_stop.pop(0)
            if pid in stopped or _command_name(pid) in NEVER_FROZEN:
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue  # exited meanwhile: nothing to freeze
            stopped.append(pid)
            _await_stopped(pid, deadline)
            to_stop.extend(child_pids(pid))
        yield stopped
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, ``pg_config --bindir``, or the newest Debian install."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # a symbolic link's bindir may lack pg_basebackup
    with suppress(OSError, ServerError):
        bindir = Path(_run(["pg_config", "--bindir"], timeout_s=10).strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3])
    )
    if not candidates:
        raise ServerError("no PostgreSQL server binaries: neither `pg_config --bindir` nor a Debian install")
    return Path(candidates[-1]).parent


class PrivatePostgres:
    """A PostgreSQL cluster of the suite's own: trust authentication, user ``postgres``, 127.0.0.1 only."""

    def __init__(
        self, bindir: Path, directory: Path, port: int, settings: Mapping[str, str] | None = None
    ) -> None:
        """``settings``: server settings given on its command line, which win over its files'."""
        self._bindir = bindir
        self.directory = directory
        self._data = directory / "data"
        self.log = directory / "postgresql.log"
        self.port = port
        given = "".join(f" -c {name}='{value}'" for name, value in (settings or {}).items())
        listen = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
        self._options = f"{listen} -c max_connections=200{given}"

    @property
    def url(self) -> str:
        """The server's URL without a database: append ``/<name>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _pg_ctl(self, *arguments: str) -> None:
        command = [
            str(self._bindir / "pg_ctl"),
            "-D",
            str(self._data),
            "-w",
            "-t",
            str(SERVER_START_TIMEOUT_S),
        ]
        try:
            _run(_as_user("postgres", [*command, *arguments]), SERVER_START_TIMEOUT_S + COMMAND_MARGIN_S)
        except ServerError as error:
            raise ServerError(f"{error}\n{_tail(self.log)}") from error

    def initialise(self) -> None:
        _run(
            _as_user(
                "postgres",
                [
                    str(self._bindir / "initdb"),
                    "-D",
                    str(self._data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
            ),
            SERVER_START_TIMEOUT_S,
        )

    def copy_of(self, primary: PrivatePostgres) -> None:
        """Make this cluster a streaming standby of ``primary`` (``pg_basebackup -R``), not ``initdb``."""
        _run(
            _as_user(
                "postgres",
                [
                    str(self._bindir / "pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(primary.port),
                    "-U",
                    "postgres",
                    "-D",
                    str(self._data),
                    "-R",
                    "-X",
                    "stream",
                ],
            ),
            SERVER_START_TIMEOUT_S,
        )

    def promote(self) -> None:
        """End a standby's recovery and wait until it accepts writes."""
        self._pg_ctl("promote")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("-l", str(self.log), "-o", self._options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` aborts open transactions and closes every connection."""
        self._pg_ctl("-m", mode, "stop")

    @property
    def postmaster_pid(self) -> int:
        """The running postmaster's pid, from the first line of ``postmaster.pid``."""
        pid_file = self._data / "postmaster.pid"
        try:
            return int(pid_file.read_text(encoding="utf-8").splitlines()[0])
        except (OSError, ValueError, IndexError) as error:
            raise ServerError(f"no running postmaster: cannot read {pid_file}: {error}") from error

    @contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """The whole cluster stopped by SIGSTOP for the block: postmaster, backends, background processes.

        Clients' connections stay open and new ones are accepted by the kernel, but no statement
        is answered; after the block every statement in flight goes on, COMMITs included.
        """
        with process_tree_frozen(self.postmaster_pid) as pids:
            yield pids

    def kill(self) -> list[int]:
        """SIGKILL every process of the cluster at once, as a crash of its machine would; return their pids.

        Nothing is flushed or sent any more, and whatever its sockets still held is dropped. The
        pid file goes too, so that the data directory can be started again (or deleted).
        """
        with process_tree_frozen(self.postmaster_pid) as pids:
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        for pid in pids:
            _await_dead(pid, deadline)
        (self._data / "postmaster.pid").unlink(missing_ok=True)
        return pids

    def ensure_running(self) -> None:
        """Start the server again if an earlier scenario left it stopped (a restart that failed).

        One broken restart then fails one scenario, not every scenario after it.
        """
        if not (self._data / "postmaster.pid").exists():
            self.start()

    def shut_down(self) -> None:
        """Stop the server if it runs, at once; if ``pg_ctl`` cannot, SIGQUIT (immediate shutdown) it."""
        pid_file = self._data / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self.stop("immediate")
        except ServerError:
            with suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text(encoding="utf-8").splitlines()[0]), signal.SIGQUIT)
            raise


@contextmanager
def private_postgres(settings: Mapping[str, str] | None = None) -> Iterator[PrivatePostgres]:
    """A freshly initialised PostgreSQL cluster, running for the block, stopped and deleted after it."""
    directory = owned_temporary_directory("orders-faults-postgres-", "postgres")
    try:
        [port] = free_ports(1)
        server = PrivatePostgres(postgres_bindir(), directory, port, settings)
        server.initialise()
        try:
            server.start()
            yield server
        finally:
            server.shut_down()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class PrivateRabbitMQ:
    """A RabbitMQ node of the suite's own, with the management API, listening on 127.0.0.1 only.

    It runs beside the machine's node, sharing its ``epmd`` and its Erlang cookie; everything
    else (name, ports, data, logs, configuration, plugins) is its own.
    """

    def __init__(self, directory: Path) -> None:
        self.node = f"faults-{secrets.token_hex(4)}@localhost"
        self.amqp_port, self._dist_port, self.management_port = free_ports(3)
        self._directory = directory
        self._pid_file = directory / "rabbitmq.pid"
        self.log = directory / "log" / f"{self.node}.log"
        self._env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(self._pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        }

    @property
    def url(self) -> str:
        """The AMQP URL without a vhost: append ``/<vhost>``."""
        user, password = RABBITMQ_USER
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def _write_configuration(self) -> None:
        files = {
            "enabled_plugins": "[rabbitmq_management].\n",
            "rabbitmq.conf": (
                f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
                f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
                # The management API's view of consumers and connections lags by this much.
                "collect_statistics_interval = 1000\n"
            ),
        }
        for name, text in files.items():
            path = self._directory / name
            path.write_text(text, encoding="utf-8")
            if os.geteuid() == 0:
                shutil.chown(path, "rabbitmq", "rabbitmq")

    def rabbitmqctl(self, *arguments: str, timeout_s: float = SERVER_START_TIMEOUT_S) -> str:
        """Run ``rabbitmqctl`` against this node; raise with the node's log tail if it fails."""
        try:
            return _run(
                ["rabbitmqctl", "-q", "-n", self.node, *arguments], timeout_s + COMMAND_MARGIN_S, self._env
            )
        except ServerError as error:
            raise ServerError(f"{error}\n{_tail(self.log)}") from error

    def start(self) -> None:
        """Start the node detached and wait until it and its management API are running."""
        self._write_configuration()
        _run(["rabbitmq-server", "-detached"], COMMAND_MARGIN_S, self._env)
        self._await_startup()
        self._wait_for_management()

    def _await_startup(self) -> None:
        """Wait until the node has booted, asking again after every refused or failed ``rabbitmqctl``.

        A node recovering the quorum queues of earlier scenarios can refuse the first calls (its
        distribution port is not open yet, or its pid file is not written yet); one such answer
        must not end the wait, only the deadline may.
        """
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            remaining_s = deadline - time.monotonic()
            try:
                self.rabbitmqctl("await_startup", "--timeout", str(max(1, int(remaining_s))))
                return
            except ServerError:
                if time.monotonic() + 1 >= deadline:
                    raise
            time.sleep(1)

    def answers(self) -> bool:
        """Whether the node's management API answers now."""
        try:
            return requests.get(f"{self.management_url}/api/overview", auth=RABBITMQ_USER, timeout=5).ok
        except requests.RequestException:
            return False

    def ensure_running(self) -> None:
        """Start the node again if an earlier scenario left it down (a restart that failed).

        One broken restart then fails one scenario, not every scenario after it.
        """
        if self.answers():
            return
        with suppress(ServerError):
            self.shut_down()
        self.start()

    def _wait_for_management(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"{self.management_url}/api/overview", auth=RABBITMQ_USER, timeout=2)
                if answer.ok:
                    return
                last = f"HTTP {answer.status_code}"
            except requests.RequestException as error:
                last = str(error)
            time.sleep(0.2)
        raise ServerError(f"management API of {self.node} not up within {SERVER_START_TIMEOUT_S} s: {last}")

    def stop_app(self) -> None:
        """Stop the RabbitMQ application; the Erlang node stays up, every connection is closed."""
        self.rabbitmqctl("stop_app")

    @property
    def os_pid(self) -> int:
        """The OS pid of the node's Erlang VM (``beam.smp``), from its pid file."""
        try:
            return int(self._pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as error:
            raise ServerError(
                f"node {self.node} is not running: cannot read {self._pid_file}: {error}"
            ) from error

    @contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """The node stopped by SIGSTOP for the block: its Erlang VM and the VM's helpers
        (``erl_child_setup``, ``inet_gethost``), never the shared ``epmd``.

        AMQP and HTTP connections stay open and nothing answers: no confirm, no ack, no delivery,
        until the block ends or a client's heartbeat timeout gives up on the connection.
        """
        with process_tree_frozen(self.os_pid) as pids:
            yield pids

    def stop_node(self) -> None:
        """Stop the whole node, Erlang VM included, and wait until its OS process has exited."""
        self.rabbitmqctl("stop", str(self._pid_file))

    def start_app(self) -> None:
        """Start the RabbitMQ application again and wait until it, and its management API, run."""
        self.rabbitmqctl("start_app")
        self.rabbitmqctl("await_startup", "--timeout", str(SERVER_START_TIMEOUT_S))
        self._wait_for_management()

    def shut_down(self) -> None:
        """Stop the node and wait for its OS process to exit; kill it if that fails.

        Safe on a node that never started: without a pid file there is nothing to stop.
        """
        if not self._pid_file.exists():
            return
        try:
            self.stop_node()
        except ServerError:
            with suppress(OSError, ValueError):
                os.kill(int(self._pid_file.read_text(encoding="utf-8").strip()), signal.SIGKILL)
            raise


@contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A fresh RabbitMQ node with its management API, running for the block, shut down and deleted after."""
    directory = owned_temporary_directory("orders-faults-rabbitmq-", "rabbitmq")
    try:
        node = PrivateRabbitMQ(directory)
        try:
            node.start()
            yield node
        finally:
            node.shut_down()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
