"""Cargo adapter: find a toolchain per target and build reproducibly.

A toolchain for a target is a ``rustc`` whose sysroot holds that target's
standard library, with the ``cargo`` beside it, and (for cross targets) the
declared linker on PATH. Candidates are searched in the directories of
``RANSOMEYE_TOOLCHAIN_PATH`` (colon-separated) when it is set, else in PATH,
``~/.cargo/bin`` and ``/usr/bin``, in that order.

Builds are reproducible: ``--offline --locked``, a clean environment for
rustc flags, source paths that cargo passes relative to the workspace,
``--remap-path-prefix`` for the cargo home, and no timestamp in PE headers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from release.errors import ToolchainError
from release.products import Workspace

HOST_TARGET = "x86_64-unknown-linux-gnu"
_RUSTFLAG_VARS = ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTDOCFLAGS")


@dataclass(frozen=True)
class Toolchain:
    """A cargo/rustc pair able to build for ``target``."""

    target: str
    cargo: Path
    rustc: Path
    version: str
    linker: str | None

    def describe(self) -> str:
        return f"{self.version} ({self.rustc})"

    def to_dict(self) -> dict[str, str | None]:
        """The toolchain as JSON, to hand to a step's process (:meth:`from_dict` reads it back)."""
        return {"target": self.target, "cargo": str(self.cargo), "rustc": str(self.rustc), "version": self.version,
                "linker": self.linker}  # fmt: skip

    @classmethod
    def from_dict(cls, data: object) -> Toolchain:
        """A toolchain :meth:`to_dict` wrote; :class:`ToolchainError` for anything else."""
        fields = ("target", "cargo", "rustc", "version")
        if not (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in fields)):
            raise ToolchainError(f"not a toolchain description: {str(data)[:200]!r}")
        linker = data.get("linker")
        if linker is not None and not isinstance(linker, str):
            raise ToolchainError(f"not a toolchain description: {str(data)[:200]!r}")
        return cls(data["target"], Path(data["cargo"]), Path(data["rustc"]), data["version"], linker)


def _search_dirs() -> list[Path]:
    override = os.environ.get("RANSOMEYE_TOOLCHAIN_PATH")
    if override is not None:
        return [Path(p) for p in override.split(os.pathsep) if p]
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += [Path.home() / ".cargo" / "bin", Path("/usr/bin")]
    return dirs


def _run_text(cmd: Sequence[str | Path]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _has_std(rustc: Path, target: str) -> bool:
    sysroot = _run_text([rustc, "--print", "sysroot"])
    if not sysroot:
        return False
    libdir = Path(sysroot) / "lib" / "rustlib" / target / "lib"
    return libdir.is_dir() and any(p.name.startswith("libstd-") for p in libdir.iterdir())


def find_toolchain(ws: Workspace, target: str) -> Toolchain:
    """Return the first toolchain that can build for ``target``.

    Raises :class:`ToolchainError` naming the Debian packages to install.
    """
    hint = ws.toolchain_hint(target)
    install = f"apt-get install {' '.join(hint.debian_packages)}" if hint.debian_packages else "install Rust"
    seen: set[Path] = set()
    for d in _search_dirs():
        rustc, cargo = d / "rustc", d / "cargo"
        if not (rustc.is_file() and cargo.is_file() and os.access(rustc, os.X_OK)):
            continue
        real = rustc.resolve()
        if real in seen:
            continue
        seen.add(real)
        if not _has_std(rustc, target):
            continue
        linker = None
        if target != HOST_TARGET:
            linker = shutil.which(hint.linker)
            if linker is None:
                raise ToolchainError(
                    f"no linker {hint.linker!r} for target {target}",
                    hint=f"{install} (or run `make setup`)",
                )
        version = _run_text([rustc, "--version"]) or "rustc (unknown version)"
        return Toolchain(target, cargo, rustc, version, linker)
    raise ToolchainError(
        f"no Rust toolchain with the standard library for {target} was found",
        hint=f"{install} (or run `make setup`, which installs what is missing)",
    )


def build_env(ws: Workspace, tc: Toolchain, epoch: int) -> dict[str, str]:
    """The environment for a reproducible cargo build with ``tc``."""
    env = {k: v for k, v in os.environ.items() if k not in _RUSTFLAG_VARS}
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    flags = [f"--remap-path-prefix={cargo_home}=/cargo", f"--remap-path-prefix={ws.root}=."]
    if "windows" in tc.target:
        flags.append("-Clink-arg=-Wl,--no-insert-timestamp")
    env.update(
        {
            "RUSTC": str(tc.rustc),
            "CARGO_ENCODED_RUSTFLAGS": "\x1f".join(flags),
            "CARGO_INCREMENTAL": "0",
            "SOURCE_DATE_EPOCH": str(epoch),
            "CARGO_TERM_COLOR": "never",
        }
    )
    if tc.linker:
        env[f"CARGO_TARGET_{tc.target.upper().replace('-', '_')}_LINKER"] = tc.linker
    return env


def cargo_build(
    ws: Workspace,
    tc: Toolchain,
    target_dir: Path,
    binaries: Sequence[str] | None,
    epoch: int,
    log: Path,
) -> Path:
    """Run ``cargo build --release --offline --locked`` for ``tc.target``.

    ``binaries`` None builds the whole workspace; otherwise only those bins.
    Cargo's output goes to ``log``. Returns the directory holding the built
    binaries. Raises :class:`ToolchainError` when cargo fails, with the log's tail.
    """
    cmd: list[str] = [
        str(tc.cargo), "build", "--release", "--offline", "--locked",
        "--target", tc.target, "--target-dir", str(target_dir),
    ]  # fmt: skip
    if binaries is None:
        cmd.append("--workspace")
    else:
        for b in binaries:
            cmd += ["--bin", b]
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=ws.root, env=build_env(ws, tc, epoch), stdout=out, stderr=subprocess.STDOUT, check=False
            )
        except OSError as e:
            raise ToolchainError(f"cannot run {tc.cargo}: {e.strerror}") from e
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ToolchainError(
            f"cargo build for {tc.target} failed (exit {proc.returncode})",
            hint=f"fix the build error below and run again\n{tail}",
        )
    return release_dir(target_dir, tc.target)


def release_dir(target_dir: Path, target: str) -> Path:
    """Where ``cargo build --release --target <target>`` leaves the binaries in ``target_dir``."""
    return target_dir / target / "release"


def dep_info_file(built: Path, filename: str) -> Path:
    """Cargo's dep-info of the binary ``filename`` in ``built``: ``<name>.d`` beside it (no ``.exe``)."""
    stem = filename[: -len(".exe")] if filename.endswith(".exe") else filename
    return built / f"{stem}.d"


def parse_dep_info(text: str, where: str) -> tuple[str, ...]:
    """The prerequisites of the first rule of a Makefile-style dep-info ``text``, unescaped, in order.

    This is the format rustc and cargo write (``target: dep dep ...``, a
    space inside a name written ``\\ ``). Raises :class:`ToolchainError`
    naming ``where`` when the text holds no rule.
    """
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = _make_words(line)
        for i, word in enumerate(words):
            if word.endswith(":"):
                return tuple(words[i + 1 :])
        break
    raise ToolchainError(f"{where}: not a dep-info file (no 'target: sources' rule)")


def _make_words(line: str) -> list[str]:
    """Split a Makefile line on unescaped blanks; ``\\ `` becomes a space."""
    words: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in " \t":
            current.append(line[i + 1])
            i += 2
            continue
        if c in " \t":
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(c)
        i += 1
    if current:
        words.append("".join(current))
    return words
