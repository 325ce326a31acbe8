"""Where ``in-toto-verify``'s time goes: phases, and each inspection's hashing and command.

``python verify_profile.py OUT.json -- in-toto-verify ARGS...`` runs the stock
``in_toto.in_toto_verify.main`` in this process with ``ARGS`` (run it in the
release folder, like the customer), with timers wrapped around the library
functions it calls: the verification phases of ``verifylib.in_toto_verify``,
and inside each inspection (``runlib.in_toto_run``) the two recordings of the
working folder (``record_artifacts_as_dict``: materials before the command,
products after) and the command itself (``execute_link``). Nothing the
verification does is changed; only time is taken. OUT.json gets the exit
code, the phases, per inspection the seconds and the bytes each recording
hashed, and this process's I/O and memory (``probe.snapshot``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.probe import snapshot

PHASES = (
    "verify_metadata_signatures",
    "load_links_for_layout",
    "verify_link_signature_thresholds",
    "verify_sublayouts",
    "verify_all_steps_command_alignment",
    "verify_threshold_constraints",
    "verify_all_item_rules",
    "run_all_inspections",
    "get_summary_link",
)


def _bytes_of(recorded: dict[str, Any]) -> int:
    total = 0
    for name in recorded:
        with contextlib.suppress(OSError):  # recorded before the command, gone after it
            total += os.stat(name).st_size
    return total


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: verify_profile.py OUT.json -- in-toto-verify ARGS...")
    out = Path(sys.argv[1])
    sys.argv = sys.argv[3:]

    import in_toto.runlib as runlib
    import in_toto.verifylib as verifylib
    from in_toto.in_toto_verify import main as verify_main

    phases: dict[str, float] = {}
    inspections: list[dict[str, Any]] = []

    def timed_phase(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name in PHASES:
        setattr(verifylib, name, timed_phase(name, getattr(verifylib, name)))

    orig_run, orig_record, orig_exec = runlib.in_toto_run, runlib.record_artifacts_as_dict, runlib.execute_link

    def in_toto_run(name: str, *args: Any, **kwargs: Any) -> Any:
        entry: dict[str, Any] = {"name": name, "recordings": [], "command_s": 0.0}
        inspections.append(entry)
        started = time.perf_counter()
        try:
            return orig_run(name, *args, **kwargs)
        finally:
            entry["total_s"] = time.perf_counter() - started

    def record(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        recorded = orig_record(*args, **kwargs)
        seconds = time.perf_counter() - started
        if inspections:
            inspections[-1]["recordings"].append(
                {"seconds": seconds, "files": len(recorded), "bytes": _bytes_of(recorded)}
            )
        return recorded

    def execute(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return orig_exec(*args, **kwargs)
        finally:
            if inspections:
                inspections[-1]["command_s"] += time.perf_counter() - started

    runlib.in_toto_run = in_toto_run
    runlib.record_artifacts_as_dict = record
    runlib.execute_link = execute

    started = time.perf_counter()
    code = 0
    try:
        verify_main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    total = time.perf_counter() - started
    report = {"exit_code": code, "total_s": total, "phases": phases, "inspections": inspections, **snapshot()}
    out.write_text(json.dumps(report, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
