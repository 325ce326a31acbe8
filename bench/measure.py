"""Running a command and measuring it: wall time, output lines as they come, memory and CPU over time.

:func:`run_measured` starts a process, timestamps each line it prints on
stdout (``build.py`` prints one per step, so the timestamps split the run
into stages), samples the process tree in ``/proc`` every few milliseconds
(resident memory of the process, proportional set size of it and all its
descendants together so that shared pages count once, CPU time), and reaps
it with ``wait4`` to get the exact peak RSS of the largest process in the
tree. Linux only.

CPU time spent inside a bubblewrap sandbox never reaches ``wait4``: its
processes live in their own PID namespace, whose reaper does not pass their
usage on (a sandboxed second of CPU shows as 0.0 to the caller). So the
sampler also keeps, for every process under a ``bwrap``, the largest CPU
time of its own it saw, and the tree's CPU adds them up; a sandboxed
process's last sampling interval (at most 50 ms) is missed, and so is a
process that lives less than one.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.05
# The tree's PSS is read every 4th sample (0.2 s): reading smaps_rollup makes the kernel walk every mapping of
# each process (about 2 ms of CPU a sample for the pipeline's tree) while holding that process's memory-map lock.
# Read every 50 ms it took about 0.1 s from a 2 s pipeline run on 2 cores, and nothing measurable from the
# sequential baseline, which leaves a core idle: a cost on one contender only.
PSS_EVERY = 4


@dataclass(frozen=True)
class Line:
    """One line of stdout and when it was complete (seconds since the start)."""

    t: float
    text: str


@dataclass(frozen=True)
class Sample:
    """The process tree at one instant (seconds since the start)."""

    t: float
    rss_kib: int  # the process itself
    tree_rss_kib: int  # the process and every descendant alive (PSS: shared pages once), read every PSS_EVERY-th
    cpu_s: float  # the process's own CPU time (all its threads) so far
    children_cpu_s: float  # CPU time of the children it has reaped so far, and of sandboxed processes (sampled)


@dataclass(frozen=True)
class Measured:
    """A finished process and what it cost."""

    returncode: int
    wall_s: float
    lines: tuple[Line, ...]
    stderr: str
    samples: tuple[Sample, ...]
    maxrss_kib: int  # wait4: the largest peak RSS of any single process in the tree
    cpu_s: float  # wait4: CPU time of the whole tree (the process and every child it reaped), plus sandboxed_cpu_s
    machine_busy_s: float  # CPU time the whole machine spent outside idle, iowait and steal meanwhile
    steal_s: float  # CPU time the hypervisor took away meanwhile
    sandboxed_cpu_s: float = 0.0  # sampled: CPU time of the processes under a bwrap, which wait4 does not see

    @property
    def stdout(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def foreign_cores(self) -> float:
        """How many cores other processes kept busy on average while this one ran (noise)."""
        return max(self.machine_busy_s - self.cpu_s, 0.0) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tree_peak_kib(self) -> int:
        """The largest sampled sum of RSS over the whole tree."""
        return max((s.tree_rss_kib for s in self.samples), default=0)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    text = _read("/proc/stat") or ""
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 1.0) -> float:
    """Wait (at most ``max_wait`` seconds) for a ``window`` in which other processes use < ``threshold`` cores.

    Returns the cores found busy in the last window (the caller reports it).
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, _ = machine_cpu()
        time.sleep(window)
        busy = (machine_cpu()[0] - busy0) / window
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def _rss_kib(pid: int) -> int:
    text = _read(f"/proc/{pid}/status")
    if text is None:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a zombie has no memory


def _pss_kib(pid: int) -> int:
    """Proportional set size: resident memory with pages shared between processes counted once overall."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return _rss_kib(pid)
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU seconds, reaped children's CPU seconds) from ``/proc/<pid>/stat``."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or "").strip()


class SandboxedCpu:
    """The CPU time of every process under a ``bwrap`` in a tree, as sampled (largest value seen per process)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds

    def sample(self, root: int, pids: Sequence[int]) -> None:
        parent: dict[int, int] = {}
        cpu: dict[int, tuple[float, float]] = {}
        for pid in pids:
            text = _read(f"/proc/{pid}/stat")
            if text is None:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            parent[pid] = int(fields[1])
            utime, stime = int(fields[11]), int(fields[12])  # its own: a reaped child was sampled itself
            cpu[pid] = (float(fields[19]), (utime + stime) / _TICK)
        for pid, (started, seconds) in cpu.items():
            if self._sandboxed(pid, root, parent) and _comm(pid) != "bwrap":
                key = (pid, started)
                self.seen[key] = max(self.seen.get(key, 0.0), seconds)

    @staticmethod
    def _sandboxed(pid: int, root: int, parent: Mapping[int, int]) -> bool:
        up = parent.get(pid)
        while up is not None and up != root:
            if _comm(up) == "bwrap":
                return True
            up = parent.get(up)
        return False

    @property
    def total_s(self) -> float:
        return sum(self.seen.values())


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (``/proc/<pid>/task/<tid>/children``, recursively)."""
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            for child in (_read(f"/proc/{pid}/task/{tid}/children") or "").split():
                out.append(int(child))
                todo.append(int(child))
    return out


def run_measured(
    cmd: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    interval: float = SAMPLE_INTERVAL,
) -> Measured:
    """Run ``cmd`` to completion and measure it (see the module docstring).

    Raises :class:`subprocess.TimeoutExpired` (after killing the process
    group) when it runs longer than ``timeout`` seconds.
    """
    busy0, steal0 = machine_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    if proc.stdout is None or proc.stderr is None:
        raise RuntimeError("Popen gave no pipes")
    stdout, stderr = proc.stdout, proc.stderr
    lines: list[Line] = []
    err: list[bytes] = []
    samples: list[Sample] = []
    sandboxed = SandboxedCpu()
    done = threading.Event()

    def read_stdout() -> None:
        for raw in iter(stdout.readline, b""):
            lines.append(Line(time.monotonic() - started, raw.decode(errors="replace").rstrip("\n")))

    def read_stderr() -> None:
        err.append(stderr.read())

    def sample() -> None:
        n, tree = 0, 0
        while not done.is_set():
            st = _stat(proc.pid)
            if st is not None:
                rss = _rss_kib(proc.pid)
                below = descendants(proc.pid)
                if n % PSS_EVERY == 0:  # in between, the last reading holds
                    tree = _pss_kib(proc.pid) + sum(_pss_kib(p) for p in below)
                n += 1
                sandboxed.sample(proc.pid, below)
                samples.append(Sample(time.monotonic() - started, rss, tree, st[1], st[2] + sandboxed.total_s))
            done.wait(interval)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr, sample)]
    for t in threads:
        t.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.monotonic() - started
    busy1, steal1 = machine_cpu()
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    stdout.close()
    stderr.close()
    if wall >= timeout:
        raise subprocess.TimeoutExpired(list(cmd), timeout)
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        lines=tuple(lines),
        stderr=b"".join(err).decode(errors="replace"),
        samples=tuple(samples),
        maxrss_kib=usage.ru_maxrss,
        cpu_s=usage.ru_utime + usage.ru_stime + sandboxed.total_s,
        machine_busy_s=busy1 - busy0,
        steal_s=steal1 - steal0,
        sandboxed_cpu_s=sandboxed.total_s,
    )
