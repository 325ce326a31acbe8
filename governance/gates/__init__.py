"""The release gates: policy checks that must all pass before anything is built.

Standard library only (Python 3.11+), so ``python3 governance/gates/check_gates.py``
runs before the project's virtual environment exists.

Layers, from the bottom up:

- :mod:`governance.gates.policy` parses ``governance/policies/*.toml`` into frozen
  dataclasses (a malformed policy is a :class:`release.errors.BadInputError`
  naming the file and the field);
- :mod:`governance.gates.limits` and :mod:`governance.gates.units` read systemd
  values and unit files; :mod:`governance.gates.crates` reads the workspace
  members' ``Cargo.toml`` files;
- one module per gate (:mod:`~governance.gates.resource_limits`,
  :mod:`~governance.gates.crate_isolation`, :mod:`~governance.gates.version_policy`,
  :mod:`~governance.gates.secret_scan`), each a pure ``check(...) -> GateResult``;
- :mod:`governance.gates.suite` runs them all into a :class:`~governance.gates.report.Report`;
- ``check_gates.py`` is the thin command line.

Module names deliberately avoid the standard library's (``secrets``, ``resource``):
running the entry point as a script puts this directory first on ``sys.path``.
"""
