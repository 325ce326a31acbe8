"""Which bytes the pipeline process reads, file by file: the "read once, hash while writing" audit.

:func:`audit_reads` runs the pipeline once under ``strace -ff -y`` (untimed:
tracing slows it) and adds up, for the pipeline process alone (its main
thread and the packaging threads, not the processes it starts, such as the
gates script or ``in-toto-verify``), the bytes every ``read`` returned, by
file. Files are sorted into the synthetic inputs, the build step's copies of
them in staging, the release files the pipeline itself wrote (an archive,
signature, ``SHA256SUMS`` or link read back is a re-read; the gates' report,
written by the gates script, is an input), the repository
(sources and assets), pipes, and the rest (the interpreter and libraries).
Reads from the moment ``build.py`` prints its ``verify`` step on are counted
apart (``verify step: ...``): verifying the staged release reads it again by
design; a re-read before that is a producing step not reusing a hash.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.pipeline import PROBE, BenchError, pipeline_env

_TS = r"^(\d+\.\d+) "
_READ = re.compile(_TS + r"(?:read|pread64|readv|preadv)\(\d+<([^>]*)>.*\)\s+=\s+(\d+)$")
_CLONE = re.compile(_TS + r"(clone3?|vfork|fork)\((.*)\)\s+=\s+(\d+)$")
# build.py prints "[i/n] verify" on stdout when its verify step starts.
_VERIFY_START = re.compile(_TS + r'write\(1<[^>]*>, "\[\d+/\d+\] verify\b')
VERIFY_PREFIX = "verify step: "


def strace_available() -> bool:
    return shutil.which("strace") is not None


def _first_time(lines: list[str]) -> float:
    for line in lines:
        if m := re.match(_TS, line):
            return float(m.group(1))
    return float("inf")


def _threads_of_root(files: dict[int, list[str]]) -> set[int]:
    """The tids of the traced root process (itself and the threads it and its threads created)."""
    created: dict[int, list[tuple[int, bool]]] = {}
    children: set[int] = set()
    for tid, lines in files.items():
        for line in lines:
            if m := _CLONE.match(line):
                child = int(m.group(4))
                is_thread = "CLONE_THREAD" in m.group(3)
                created.setdefault(tid, []).append((child, is_thread))
                children.add(child)
    # Processes in a sandbox's pid namespace see their children's pids in that namespace, not strace's: they
    # look like roots too. The traced root is the one that started first.
    roots = sorted((_first_time(files[tid]), tid) for tid in files if tid not in children)
    if not roots:
        raise BenchError("strace: no root process in the trace")
    root = roots[0][1]
    main = {root}
    todo = [root]
    while todo:
        for child, is_thread in created.get(todo.pop(), []):
            if is_thread and child not in main:
                main.add(child)
                todo.append(child)
    return main


def classify(path: str, bins: Path, repo: Path) -> str:
    """The category of a file the pipeline read (see the module docstring)."""
    if path.startswith(("pipe:", "socket:")):
        return "pipes"
    p = Path(path)
    if p.is_relative_to(bins):
        return "inputs: synthetic binaries"
    staging = repo / "release" / ".staging"
    if p.is_relative_to(staging):
        parts = p.relative_to(staging).parts
        if len(parts) > 1 and parts[1] == "bin":
            return "inputs: staging copies of the binaries"
        if len(parts) > 1 and parts[1] == "out":
            name = p.name
            if name == "gates-report.json":  # written by the gates subprocess: the pipeline's first read of it
                return "inputs: the gates' report"
            if name.endswith((".tar.gz", ".zip")):
                return "re-read: archives"
            if name.endswith(".minisig"):
                return "re-read: signatures"
            if name.endswith(".link"):
                return "re-read: links"
            return f"re-read: {name}"
        return "staging: other"
    if p.is_relative_to(repo):
        return "repository: sources, assets, keys"
    return "interpreter and libraries"


def audit_reads(repo: Path, bins: Path, binary_bytes: int) -> dict[str, Any]:
    """Run the pipeline once under strace; return the bytes its processes read, by category.

    Its processes: ``build.py`` and everything it starts (the sandboxed build
    and packaging steps read the binaries now, not ``build.py`` itself); reads
    from the moment the verify step starts count apart.

    ``binary_bytes`` is the total size of the synthetic binaries, to express
    how many times each input byte was read.
    """
    build = repo / "release" / "builder" / "build.py"
    with tempfile.TemporaryDirectory(prefix="bench-strace-") as tmp:
        prefix = Path(tmp) / "t"
        probe_out = Path(tmp) / "probe.json"
        cmd = [
            "strace", "-f", "-ff", "-y", "-ttt", "-s", "24", "-o", str(prefix),
            "-e", "trace=read,pread64,readv,preadv,clone,clone3,vfork,fork,write",
            sys.executable, str(PROBE), str(probe_out), str(build), "--unsafe-prebuilt-binaries", str(bins),
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=repo, env=pipeline_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"the pipeline under strace failed:\n{proc.stdout}\n{proc.stderr}")
        files = {int(p.suffix[1:]): p.read_text(errors="replace").splitlines() for p in Path(tmp).glob("t.*")}
    main = _threads_of_root(files)
    starts = [float(m.group(1)) for tid in main for line in files[tid] if (m := _VERIFY_START.match(line))]
    verify_start = min(starts, default=float("inf"))
    by_file: Counter[tuple[bool, str]] = Counter()
    for lines in files.values():
        for line in lines:
            if m := _READ.match(line):
                by_file[(float(m.group(1)) >= verify_start, m.group(2))] += int(m.group(3))
    by_category: Counter[str] = Counter()
    for (in_verify, path), n in by_file.items():
        category = classify(path, bins.resolve(), repo.resolve())
        by_category[(VERIFY_PREFIX + category) if in_verify else category] += n
    reread = {k: v for k, v in by_category.items() if k.startswith("re-read")}
    inputs = by_category["inputs: synthetic binaries"] + by_category["inputs: staging copies of the binaries"]
    return {
        "threads": len(main),
        "by_category": dict(by_category.most_common()),
        "reread_bytes": sum(reread.values()),
        "reread": reread,
        "verify_step_bytes": sum(v for k, v in by_category.items() if k.startswith(VERIFY_PREFIX)),
        "verify_step_started": verify_start != float("inf"),
        "binary_read_passes": round(inputs / binary_bytes, 3) if binary_bytes else None,
        "largest_files": {f"{VERIFY_PREFIX if v else ''}{p}": n for (v, p), n in by_file.most_common(12)},
    }
