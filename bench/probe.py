"""Run a Python script in this very process and record, at exit, what it cost.

``python probe.py OUT.json SCRIPT [ARGS...]`` runs ``SCRIPT`` as ``python
SCRIPT ARGS...`` would (same ``sys.argv``, ``sys.path[0]`` and
``__main__``), then writes OUT.json with the process's own peak RSS
(``VmHWM``), its I/O counters (``/proc/self/io``: ``rchar`` counts every byte
returned by ``read``, page cache or not; Linux adds the counters of every
child process once it is reaped), and the CPU time and largest peak RSS of the
child processes it waited for. Standard library only.
"""

from __future__ import annotations

import atexit
import json
import resource
import runpy
import sys
from pathlib import Path
from typing import Any


def _proc_fields(path: str, sep: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(sep)
        fields[key.strip()] = value.strip()
    return fields


def snapshot() -> dict[str, Any]:
    """This process's peak memory, I/O counters and CPU, and those of its waited-for children."""
    status = _proc_fields("/proc/self/status", ":")
    io = _proc_fields("/proc/self/io", ":")
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "self_hwm_kib": int(status["VmHWM"].split()[0]),
        "self_rss_kib": int(status["VmRSS"].split()[0]),
        "rchar": int(io["rchar"]),
        "wchar": int(io["wchar"]),
        "syscr": int(io["syscr"]),
        "syscw": int(io["syscw"]),
        "self_cpu_s": me.ru_utime + me.ru_stime,
        "children_cpu_s": kids.ru_utime + kids.ru_stime,
        "children_maxrss_kib": kids.ru_maxrss,
    }


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: probe.py OUT.json SCRIPT [ARGS...]")
    out = Path(sys.argv[1])
    script = Path(sys.argv[2]).resolve()
    sys.argv = [str(script), *sys.argv[3:]]
    sys.path[0] = str(script.parent)
    atexit.register(lambda: out.write_text(json.dumps(snapshot(), indent=1)))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
