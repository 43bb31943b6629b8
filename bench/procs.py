"""What /proc says about a process: memory, CPU time, threads, descriptors, TCP connections.

CPU time comes from two places: `utime+stime` in /proc/PID/stat (what `top` shows, in clock ticks
of 10 ms, too coarse for an idle process over a minute) and the per-thread `schedstat` (nanoseconds
on a CPU), which is what the idle CPU figure is computed from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    rss_kib: int
    threads: int
    ticks: int  # utime + stime, in clock ticks
    cpu_ns: int  # sum over threads of time on a CPU (schedstat)
    switches: int  # context switches over all threads: each is a wake-up or a preemption


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def sample(pid: int) -> Sample:
    status = _status(pid)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_comm = stat.rsplit(")", 1)[1].split()
    ticks = int(after_comm[11]) + int(after_comm[12])  # fields 14 and 15: utime, stime
    cpu_ns = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu_ns += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                    switches += int(line.split(":")[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listing and reading
    return Sample(int(status["VmRSS"].split()[0]), int(status["Threads"]), ticks, cpu_ns, switches)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections(pid: int, ports: set[int] | None = None) -> int:
    """Established TCP connections of `pid` (IPv4 and IPv6): to any of `ports`, or to anything."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if cols[3] == "01" and cols[9] in inodes and (ports is None or remote_port in ports):  # 01 = ESTABLISHED
                count += 1
    return count
