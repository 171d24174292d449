"""Where the CPU went during a measurement: seconds used by each part of the system, from ``/proc``.

On a 2-core machine shared by the load tool, the API, the workers, PostgreSQL and RabbitMQ, the
split says who is the bottleneck, and that the load tool is not.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Process:
    ppid: int
    uid: int
    cpu_s: float


def _read(pid: int) -> _Process | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        uid = (_PROC / str(pid)).stat().st_uid
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return _Process(ppid=int(fields[1]), uid=uid, cpu_s=(int(fields[11]) + int(fields[12])) / _TICKS_PER_S)


def processes() -> dict[int, _Process]:
    """Every process running now."""
    found = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            process = _read(int(entry.name))
            if process is not None:
                found[int(entry.name)] = process
    return found


def descendants(root: int, table: Mapping[int, _Process] | None = None) -> set[int]:
    """``root`` and every process below it."""
    table = processes() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, process in table.items():
        children.setdefault(process.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mb(root: int) -> float:
    """Resident memory of ``root`` and its descendants, in MiB."""
    total_kb = 0
    for pid in descendants(root):
        try:
            status = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


class CpuMeter:
    """CPU seconds per named group of processes between :meth:`start` and :meth:`stop`.

    A group is either process trees (the roots' descendants at stop time) or a user (every
    process it runs, such as ``postgres``); processes born during the measurement count in full.
    """

    def __init__(self, trees: Mapping[str, int], users: Mapping[str, str]) -> None:
        self._trees = dict(trees)
        self._uids = {name: _uid(user) for name, user in users.items()}
        self._before: dict[int, _Process] = {}

    def start(self) -> None:
        """Take the first snapshot."""
        self._before = processes()

    def stop(self) -> dict[str, float]:
        """CPU seconds each group used since :meth:`start`, plus ``other`` and ``total``."""
        after = processes()
        used = {
            pid: process.cpu_s - (self._before[pid].cpu_s if pid in self._before else 0.0)
            for pid, process in after.items()
        }
        split = dict.fromkeys([*self._trees, *self._uids, "other"], 0.0)
        claimed: set[int] = set()
        for name, root in self._trees.items():
            members = descendants(root, after) - claimed
            split[name] += sum(used[pid] for pid in members)
            claimed |= members
        for pid, process in after.items():
            if pid in claimed:
                continue
            group = next((name for name, uid in self._uids.items() if uid == process.uid), "other")
            split[group] += used[pid]
        split["total"] = sum(used.values())
        return split


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -1
