"""The sandbox of the build and packaging steps: bubblewrap, with no network, no keys and a clean environment.

A sandboxed step sees the system's programs and libraries, its toolchains
and the source read-only, the earlier steps' products read-only, and can
write only its own output folder (and cargo's target directory): no network
(a new network namespace with nothing in it), no other process, a private
``/tmp``, an empty ``HOME``, an environment of a few named variables, and no
key folder (every one given is hidden behind an empty tmpfs; signing happens
outside, on the hashes the step recorded). The link and the provenance
record :meth:`Sandbox.describe`; a run with ``--no-sandbox`` records that it
was unsandboxed, and the audit shows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.errors import ToolchainError

# The project's Python packages a step's process imports (compiled before the steps run).
PACKAGES = ("release", "governance")

TOOL = "bwrap"
INSTALL_HINT = (
    "install bubblewrap (`make setup`, or as root: apt-get install bubblewrap); "
    "or run with --no-sandbox, which the provenance records and the audit shows as unsandboxed"
)
# What the system lends every sandbox, read-only (those that exist; merged-/usr symlinks stay symlinks).
SYSTEM = ("/usr", "/etc", "/lib", "/lib64", "/bin", "/sbin", "/opt")
# The variables a sandboxed step keeps (the rest of the environment is cleared).
KEPT = ("SOURCE_DATE_EPOCH", "RUSTUP_TOOLCHAIN", "RANSOMEYE_FAILPOINT")
# The rest of a sandboxed step's environment: fixed, whatever the builder's machine says.
FIXED = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Inside the sandbox only: a private tmpfs, not the machine's /tmp.
HOME = "/tmp/home"  # noqa: S108
CARGO_HOME = "/tmp/cargo-home"  # noqa: S108


@dataclass(frozen=True)
class Sandbox:
    """How the build and packaging steps run: under ``bwrap`` (``tool``), or unsandboxed (``tool`` None)."""

    tool: str | None
    version: str = ""

    @property
    def enabled(self) -> bool:
        return self.tool is not None

    def describe(self) -> dict[str, Any]:
        """What a link's environment and the provenance record about the sandbox."""
        if self.tool is None:
            return {"unsandboxed": True, "reason": "--no-sandbox: run without bubblewrap on the builder's request"}
        return {
            "tool": f"bubblewrap {self.version}".strip(),
            "network": "none (empty network namespace)",
            "source": "read-only",
            "inputs": "read-only (earlier steps' products)",
            "writable": "the step's output folder and cargo's target directory only",
            "keys": "none (key folders hidden; the link is signed outside on the recorded hashes)",
            "environment": f"cleared (kept: {', '.join(KEPT)}; TZ=UTC, LC_ALL=C.UTF-8; HOME and CARGO_HOME empty)",
        }

    def command(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        read_only: Sequence[Path],
        writable: Sequence[Path],
        hidden: Sequence[Path],
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """``argv`` wrapped to run in the sandbox (unchanged when unsandboxed)."""
        if self.tool is None:
            return list(argv)
        args = [self.tool, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", HOME, "--dir", CARGO_HOME]  # noqa: S108
        for top in SYSTEM:
            p = Path(top)
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), top]
            elif p.is_dir():
                args += ["--ro-bind", top, top]
        for p in _outermost(read_only):
            args += ["--ro-bind", str(p), str(p)]
        for p in hidden:
            if p.is_dir() and any(_within(p, q) for q in read_only):
                args += ["--tmpfs", str(p)]
        for p in writable:
            args += ["--bind", str(p), str(p)]
        variables = {k: v for k, v in os.environ.items() if k in KEPT or k.startswith("COVERAGE_")}
        variables.update(env or {})
        variables.update({"HOME": HOME, "CARGO_HOME": CARGO_HOME, **FIXED})
        variables.setdefault("PATH", SYSTEM_PATH)
        for k, v in sorted(variables.items()):
            args += ["--setenv", k, v]
        return [*args, "--chdir", str(cwd), "--", *argv]


UNSANDBOXED = Sandbox(None)


def _within(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without those inside another (binding both would hide nothing, but twice is noise)."""
    unique = sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in unique:
        if not any(_within(p, q) for q in out):
            out.append(p)
    return out


def toolchain_paths() -> list[Path]:
    """What a sandboxed step needs to run Python and Rust, beyond the system: the venv, rustup's toolchains.

    Only ``$CARGO_HOME/bin`` is lent, never the whole ``$CARGO_HOME`` (it may hold registry credentials).
    """
    home = Path.home()
    cargo_home = Path(os.environ.get("CARGO_HOME", home / ".cargo"))
    rustup_home = Path(os.environ.get("RUSTUP_HOME", home / ".rustup"))
    python = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent]
    return [p for p in (*python, cargo_home / "bin", rustup_home) if p.exists()]


def toolchain_env(cargos: Sequence[Path]) -> dict[str, str]:
    """Where the sandboxed step finds the toolchains found outside: the same, in the same order, by path."""
    dirs = os.pathsep.join(dict.fromkeys(str(c.parent) for c in cargos))
    env = {"RANSOMEYE_TOOLCHAIN_PATH": dirs, "PATH": f"{dirs}{os.pathsep}{SYSTEM_PATH}" if dirs else SYSTEM_PATH}
    rustup_home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    if rustup_home.exists():
        env["RUSTUP_HOME"] = str(rustup_home)
    return env


def coverage_paths() -> list[Path]:
    """Under the test suite's coverage measurement only: the folder the measured process writes its data to."""
    data = os.environ.get("COVERAGE_FILE")
    return [Path(data).resolve().parent] if data and os.environ.get("COVERAGE_PROCESS_CONFIG") else []


def compile_packages(root: Path) -> None:
    """Compile the project's own Python (``PACKAGES``) into its ``__pycache__`` folders; what is current is kept.

    Every step runs as a new Python process (the gates, each sandboxed build
    and packaging step), and a sandbox sees the source read-only: without this
    each of them would compile every module it imports again, about 0.1 s of
    the few tenths a step takes when its inputs are small. Written even under
    ``PYTHONDONTWRITEBYTECODE``: these are build caches like cargo's
    ``target``, git-ignored and never part of the hashed source
    (:data:`release.source.CACHE_DIRS`). A folder that cannot be written (a
    read-only checkout) or a module that does not compile is left as it is;
    its import says what is wrong. A ``__pycache__`` that is a symlink is
    never written through (it could lead anywhere, a key folder included).
    """
    import compileall  # the run's own process only: a step's process never compiles
    import py_compile

    # Bytecode checked by the source's mtime, also under SOURCE_DATE_EPOCH (whose default, hash-checked bytecode
    # compileall cannot see is current, and would write again on every run).
    by_timestamp = py_compile.PycInvalidationMode.TIMESTAMP
    for package in PACKAGES:
        for folder in _package_folders(root / package):
            if not (folder / "__pycache__").is_symlink():
                compileall.compile_dir(folder, maxlevels=0, quiet=2, invalidation_mode=by_timestamp)


def _package_folders(top: Path) -> list[Path]:
    """``top`` and its sub-packages (folders with an ``__init__.py``), not other folders (node_modules, data)."""
    if not (top / "__init__.py").is_file():
        return []
    subs = sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink())
    return [top, *(f for sub in subs for f in _package_folders(sub))]


def find_sandbox(unsandboxed: bool = False) -> Sandbox:
    """The sandbox to run the build and packaging steps in; checks that it works before any work starts.

    Raises :class:`ToolchainError` (exit 3) when bubblewrap is missing or
    cannot make a sandbox here, naming how to install it and the opt-out.
    """
    if unsandboxed:
        return Sandbox(None)
    tool = shutil.which(TOOL)
    if tool is None:
        raise ToolchainError("bubblewrap (bwrap) is not installed: the build and packaging steps run in it",
                             hint=INSTALL_HINT)  # fmt: skip
    sandbox = Sandbox(tool, _version(tool))
    probe = sandbox.command(["/bin/true"], cwd=Path("/"), read_only=[], writable=[], hidden=[])
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"bubblewrap cannot run: {e}", hint=INSTALL_HINT) from e
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise ToolchainError(
            f"bubblewrap cannot make a sandbox here: {why[0]}",
            hint="allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1); " + INSTALL_HINT,
        )
    return sandbox


def _version(tool: str) -> str:
    try:
        proc = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip().removeprefix("bubblewrap").strip()
