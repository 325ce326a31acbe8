"""Print the suite's line and branch coverage of release/ and governance/; fail under the floor.

Run by ``make test`` after the combined report: ``python -m tests.coverage_floor 90``.
The floor applies to line coverage; branch coverage is reported beside it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import coverage


def main(argv: list[str]) -> int:
    floor = float(argv[0]) if argv else 90.0
    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        totals = json.loads(out.read_text())["totals"]
    statements, covered = totals["num_statements"], totals["covered_lines"]
    branches, taken = totals["num_branches"], totals["covered_branches"]
    if not statements:
        print("coverage: no data (run the suite under `make test`)", file=sys.stderr)
        return 1
    line = 100.0 * covered / statements
    branch = 100.0 * taken / branches if branches else 100.0
    print(
        f"coverage of release/ and governance/: lines {line:.1f}% ({covered}/{statements}), "
        f"branches {branch:.1f}% ({taken}/{branches}); line floor {floor:.0f}%"
    )
    if line < floor:
        print(f"coverage: line coverage {line:.1f}% is under the floor of {floor:.0f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
