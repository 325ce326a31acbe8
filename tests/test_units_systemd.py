"""The resources gate sees what systemd sees: the unit resolver against systemd itself, and hostile drop-ins.

systemd is asked offline, with no systemd running (CI has no PID 1 systemd),
as root or not:

- ``SYSTEMD_LOG_LEVEL=debug systemd-analyze --root=ROOT verify UNIT...`` loads
  each unit from ROOT's unit search path into a test manager and, at debug
  level, dumps it: every ``DropIn Path:`` in the order applied, and the
  effective ``MemoryMax:``, ``CPUQuotaPerSecSec:``, ``TasksMax:`` and
  ``LimitNOFILE:``. A template is loaded as its instance ``i``.
- ``systemctl --root=ROOT enable UNIT`` creates the ``Alias=`` links an
  installation gets.

(``systemctl cat`` refuses ``--root``, ``systemd-delta`` has no root at all,
and ``systemd-analyze cat-config`` shows ``<unit>.d/`` only, so none of them
can show what systemd reads for a unit tree.)

The trees are installed as a release installs them: units and drop-ins in
ROOT/usr/lib/systemd/system, and, for the resolver's comparisons, some in
ROOT/etc/systemd/system, which systemd searches first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from governance.gates.limits import LIMITS, LimitSyntaxError, Unbounded
from governance.gates.policy import ResourcesPolicy, parse_resources, read_toml_file
from governance.gates.resource_limits import find_layout, find_units
from governance.gates.suite import run_gates
from governance.gates.units import (
    UnitFile,
    dropin_names,
    dropin_search_order,
    install_aliases,
    is_template,
    parse_unit_text,
    read_unit_file,
    resolve_unit,
    split_lines,
)
from release.errors import BadInputError
from release.products import load_workspace
from tests.gates_fixtures import build_repo, edit, run_cli

ANALYZE = shutil.which("systemd-analyze")
SYSTEMCTL = shutil.which("systemctl")
SEARCH = ("etc/systemd/system", "usr/lib/systemd/system")
INSTALL_DIR = "usr/lib/systemd/system"
U64 = (1 << 64) - 1
BY_DIRECTIVE = {limit.directive: limit for limit in LIMITS.values()}
CORE = "ops/services/core"
CORE_UNIT = f"{CORE}/ransomeye-core.service"
PLAIN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"}


# --------------------------------------------------------------------------- asking systemd


@pytest.fixture(scope="module", autouse=True)
def _systemd_tools() -> None:
    if ANALYZE is None or SYSTEMCTL is None:
        pytest.fail("systemd-analyze and systemctl are needed: apt-get install systemd (no running systemd is)")


@pytest.fixture
def real_tmp(tmp_path: Path) -> Path:
    """``tmp_path`` with symlinks resolved: systemd names drop-ins by their real paths."""
    return Path(os.path.realpath(tmp_path))


@dataclass
class Seen:
    """What systemd's dump of one unit says."""

    dropins: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)


def systemd_sees(root: Path, names: Sequence[str], cwd: Path) -> dict[str, Seen]:
    """Load ``names`` from ``root`` with ``systemd-analyze verify`` and parse its debug dump of each.

    ``cwd`` must not hold the units: verify would add it to the search path.
    Drop-in paths come back relative to ``root``.
    """
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, f"--root={root}", "verify", "--man=no", "--generators=no", "--recursive-errors=no", *names],
        cwd=cwd,
        env={**PLAIN_ENV, "SYSTEMD_LOG_LEVEL": "debug"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seen: dict[str, Seen] = {}
    current: Seen | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("\t-> Unit ") and line.endswith(":"):
            current = seen.setdefault(line[len("\t-> Unit ") : -1], Seen())
        elif current is not None and line.startswith("\t\t") and line[2:3] != "\t" and ": " in line:
            key, _, value = line[2:].partition(": ")
            if key == "DropIn Path":
                current.dropins.append(Path(value).relative_to(root).as_posix())
            else:
                current.values.setdefault(key, value)
    return seen


def enable(root: Path, names: Sequence[str]) -> None:
    """``systemctl --root=ROOT enable``: the alias links an installation gets."""
    assert SYSTEMCTL is not None
    proc = subprocess.run(
        [SYSTEMCTL, f"--root={root}", "enable", *names],
        env=PLAIN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


_SPAN = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|min|h)")
_USEC = {"us": 1, "ms": 1000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}


def _usec(text: str) -> int | None:
    """A timespan of systemd's dump (``1.500000s``, ``1min 500ms``) in microseconds; None for infinity."""
    if text == "infinity":
        return None
    total = Decimal(0)
    for part in text.split():
        m = _SPAN.fullmatch(part)
        assert m is not None, text
        total += Decimal(m.group(1)) * _USEC[m.group(2)]
    return int(total)


def systemd_values(seen: Seen) -> dict[str, int | None]:
    """The four limits as systemd holds them: bytes, microseconds of CPU per second, tasks, open files."""
    nofile = seen.values.get("LimitNOFILE")
    return {
        "MemoryMax": int(seen.values["MemoryMax"]),
        "CPUQuota": _usec(seen.values["CPUQuotaPerSecSec"]),
        "TasksMax": int(seen.values["TasksMax"]),
        "LimitNOFILE": None if nofile is None else int(nofile),
    }


def expected_values(unit: UnitFile) -> dict[str, int | None]:
    """What systemd should hold after applying the resolver's assignments, in systemd's own rules.

    The last ``[Service]`` assignment systemd accepts wins; an empty one resets
    (``MemoryMax=``, ``CPUQuota=``, ``TasksMax=``) or is ignored
    (``LimitNOFILE=``); a value the gate's parsers refuse is taken as one
    systemd ignores too (the comparison then checks that it does).
    """
    decided: dict[str, int | Unbounded | None] = dict.fromkeys(BY_DIRECTIVE)
    for a in unit.assignments:
        limit = BY_DIRECTIVE.get(a.key)
        if a.section != "Service" or limit is None:
            continue
        if a.value == "":
            if limit.empty is not None:
                decided[a.key] = None
            continue
        try:
            decided[a.key] = limit.parse(a.value)
        except LimitSyntaxError:
            continue
    out: dict[str, int | None] = {}
    for directive, amount in decided.items():
        if isinstance(amount, int):
            out[directive] = amount * 100 if directive == "CPUQuota" else amount
        elif directive in ("MemoryMax", "TasksMax"):
            out[directive] = U64  # unset, reset and infinity alike
        else:
            out[directive] = U64 if isinstance(amount, Unbounded) else None
    return out


def search_path(root: Path) -> list[list[Path]]:
    return [[root / d] for d in SEARCH]


def systemd_path(dropin_path: Path, root: Path) -> str:
    """How systemd names a drop-in: in its directory with symlinks resolved."""
    return (Path(os.path.realpath(dropin_path.parent)) / dropin_path.name).relative_to(root).as_posix()


# --------------------------------------------------------------------------- unit names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("foo-bar-baz.service", ["foo-bar-baz.service", "foo-bar-.service", "foo-.service"]),
        ("ransomeye-core.service", ["ransomeye-core.service", "ransomeye-.service"]),
        ("a.service", ["a.service"]),
        ("-a-b.service", ["-a-b.service", "-a-.service"]),
        ("a--b.service", ["a--b.service", "a--.service", "a-.service"]),
        ("a-b-.service", ["a-b-.service", "a-.service"]),
        (
            "a-b@x.service",
            ["a-b@x.service", "a-b@.service", "a-.service", "a-@x.service", "a-@.service"],
        ),
    ],
)
def test_dropin_directory_names(name: str, expected: list[str]) -> None:
    """systemd.unit(5): foo-bar-baz.service.d/, then foo-bar-.service.d/ and foo-.service.d/; an instance adds
    its template's."""
    assert dropin_names(name) == expected


def test_search_order_puts_the_type_directory_last_in_every_search_directory() -> None:
    assert dropin_search_order(["a-b.service"], 2) == [
        (0, "a-b.service.d"),
        (0, "a-.service.d"),
        (1, "a-b.service.d"),
        (1, "a-.service.d"),
        (0, "service.d"),
        (1, "service.d"),
    ]


# --------------------------------------------------------------------------- the resolver against systemd

UNIT_POOL = ("a-b-c.service", "a-b.service", "a.service", "a-b@.service", "x--y.service")
ALIAS_POOL = ("z-y.service", "a-q.service")
FILE_POOL = ("10-a.conf", "20-b.conf", "05.conf", "30-c.conf", ".40.conf", "50.txt", "60.conf~")

_memory = st.one_of(
    st.integers(1, 8192).map(lambda n: f"{n}M"),
    st.builds(lambda a, b, s: f"{a}.{b}{s}", st.integers(0, 9), st.integers(0, 999), st.sampled_from("KMG")),
    st.integers(1, 3).map(lambda n: f"{n} G"),
    st.sampled_from(["infinity", "", "0"]),
)
_quota = st.one_of(
    st.integers(1, 800).map(lambda n: f"{n}%"),
    st.builds(lambda a, b: f"{a}.{b:02d}%", st.integers(0, 99), st.integers(1, 99)),
    st.sampled_from(["", "0%", "0.5%", "1.5%"]),
)
_tasks = st.one_of(st.integers(1, 5000).map(str), st.sampled_from(["infinity", "", "0"]))
_nofile = st.one_of(
    st.integers(0, 100_000).map(str),
    st.tuples(st.integers(0, 5000), st.integers(0, 5000)).map(lambda t: f"{min(t)}:{max(t)}"),
    st.sampled_from(["infinity", "", "1024:infinity", "infinity:1024", "4096:1024"]),
)
VALUES = {"MemoryMax": _memory, "CPUQuota": _quota, "TasksMax": _tasks, "LimitNOFILE": _nofile}
directive_lines = st.sampled_from(sorted(VALUES)).flatmap(lambda d: VALUES[d].map(lambda v: f"{d}={v}"))


@st.composite
def dropin_texts(draw: st.DrawFn) -> str:
    """A drop-in: sections (mostly [Service]) holding limit assignments."""
    out = ""
    for _ in range(draw(st.integers(0, 3))):
        out += f"[{draw(st.sampled_from(['Service', 'Service', 'Unit', 'X-Other']))}]\n"
        out += "".join(line + "\n" for line in draw(st.lists(directive_lines, max_size=3)))
    return out


def _write(path: Path, kind: tuple[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    what, arg = kind
    if what == "text":
        path.write_text(arg)
    elif what == "devnull":
        path.symlink_to("/dev/null")
    elif what == "link":
        path.symlink_to(arg)
    else:
        path.mkdir()


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_resolver_reads_what_systemd_reads(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Random unit trees: the resolver's drop-ins, their order and the effective limits equal systemd's dump."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("root")))
    cwd = tmp_path_factory.mktemp("cwd")
    (root / "dev").mkdir()
    (root / "dev" / "null").touch()  # systemctl --root resolves /dev/null links inside the root
    units = data.draw(st.lists(st.sampled_from(UNIT_POOL), min_size=1, max_size=3, unique=True), "units")
    aliased = data.draw(st.sampled_from([None, *[u for u in units if not is_template(u)]]), "aliased")
    alias = data.draw(st.sampled_from(ALIAS_POOL), "alias")
    names = {u: u.replace("@.", "@i.") for u in units}
    places: dict[str, Path] = {}
    for unit in units:
        home = root / data.draw(st.sampled_from(SEARCH), f"home of {unit}")
        home.mkdir(parents=True, exist_ok=True)
        body = "[Unit]\nDescription=t\n[Service]\nExecStart=/bin/true\n"
        body += "".join(line + "\n" for line in data.draw(st.lists(directive_lines, max_size=4), f"{unit} lines"))
        if unit == aliased:
            body += f"[Install]\nAlias={alias}\n"
        (home / unit).write_text(body)
        places[unit] = home / unit
    candidates = sorted(
        {n + ".d" for u in units for n in dropin_names(names[u])}
        | {n + ".d" for n in dropin_names(alias)}
        | {"service.d", "q-.service.d"}
    )
    # systemctl enable reads drop-ins too, and refuses looping links and directories: none when enabling.
    kinds = st.one_of(
        dropin_texts().map(lambda t: ("text", t)),
        st.just(("text", "")),
        st.just(("devnull", "")),
        *(
            [
                st.sampled_from(FILE_POOL).map(lambda f: ("link", f)),
                st.sampled_from(candidates).map(lambda d: ("link", f"../{d}/10-a.conf")),
                st.just(("dir", "")),
            ]
            if aliased is None
            else []
        ),
    )
    for directory in data.draw(st.lists(st.sampled_from(candidates), max_size=5, unique=True), "dirs"):
        for where in data.draw(st.lists(st.sampled_from(SEARCH), min_size=1, max_size=2, unique=True), "where"):
            for name in data.draw(st.lists(st.sampled_from(FILE_POOL), max_size=3, unique=True), "files"):
                _write(root / where / directory / name, data.draw(kinds, "kind"))
    if aliased is not None:
        enable(root, [aliased])
        assert os.readlink(root / SEARCH[0] / alias).endswith(f"/{aliased}")

    seen = systemd_sees(root, units, cwd)
    for unit in units:
        name = names[unit]
        assert name in seen, f"systemd did not load {name}"
        parsed = read_unit_file(places[unit], root)
        aliases = install_aliases(name, parsed, search_path(root), root) if unit == aliased else ()
        assert aliases == ((alias,) if unit == aliased else ())
        resolved = resolve_unit(name, unit, parsed, search_path(root), root, aliases=aliases)
        assert [systemd_path(d.path, root) for d in resolved.dropins.applied] == seen[name].dropins, name
        assert expected_values(resolved) == systemd_values(seen[name]), (name, resolved.assignments)


# --------------------------------------------------------------------------- syntax against systemd

_SEPARATORS = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\0", "\n\r", "\n\n", "\r\r"])
_BLANK = st.sampled_from(["", "", "", "", " ", "\t", "  \t", "\x0b", "\u00a0"])
_syntax_lines = st.one_of(
    st.builds(lambda a, b, line, c: f"{a}{line.replace('=', b + '=', 1)}{c}", _BLANK, _BLANK, directive_lines, _BLANK),
    st.sampled_from(
        [
            "[Service]",
            "[Unit]",
            "[ Service ]",
            "[service]",
            "[X-Extra]",
            "# MemoryMax=1G",
            "  ; TasksMax=3",
            "Description=text \\",
            "Description=text \\\\",
            "Description=a\\\\\\",
            "MemoryMax=1\\",
            "G",
            "TasksMax=7 \\",
            "",
            "\ufeff[Service]",
        ]
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.tuples(_syntax_lines, _SEPARATORS), max_size=10))
def test_parser_never_reads_a_limit_systemd_does_not(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[str, str]]
) -> None:
    """Line ends (CR, NUL, CRLF), continuations, escaped backslashes, comments, blanks systemd does not strip:
    whenever the parser accepts a unit, its limits are systemd's (a refusal is allowed, a different reading not)."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("root")))
    text = "[Unit]\nDescription=t\n[Service]\nExecStart=/bin/true\n" + "".join(a + b for a, b in lines)
    path = root / INSTALL_DIR / "p-q.service"
    path.parent.mkdir(parents=True)
    path.write_text(text, newline="")
    try:
        parsed = read_unit_file(path, root)
    except BadInputError:
        event("refused by the parser")
        return
    seen = systemd_sees(root, ["p-q.service"], tmp_path_factory.mktemp("cwd"))
    resolved = resolve_unit("p-q.service", "p-q.service", parsed, search_path(root), root)
    assert expected_values(resolved) == systemd_values(seen["p-q.service"]), text


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("a\nb", ["a", "b"]),
        ("a\r\nb\n", ["a", "b"]),
        ("a\rb", ["a", "b"]),
        ("a\n\nb", ["a", "", "b"]),
        ("a\n\rb", ["a", "b"]),
        ("a\0\nb", ["a", "", "b"]),
        ("a\n\0b", ["a", "b"]),
        ("", []),
        ("\n", [""]),
        ("a\x0bb\u2028c", ["a\x0bb\u2028c"]),
    ],
)
def test_lines_end_where_systemd_ends_them(text: str, lines: list[str]) -> None:
    assert split_lines(text) == lines


def test_an_escaped_backslash_does_not_continue_a_line() -> None:
    text = "[Service]\nDescription=a\\\\\nMemoryMax=8G\nTasksMax=1 \\\n  # comment\n 2\n"
    got = [(a.line, a.key, a.value) for a in parse_unit_text(text, "x.service")]
    assert got == [(2, "Description", "a\\\\"), (3, "MemoryMax", "8G"), (4, "TasksMax", "1   2")]


# --------------------------------------------------------------------------- systemd's own rules, pinned


def _install(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / INSTALL_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_an_empty_limitnofile_is_ignored_by_systemd_not_a_reset(real_tmp: Path) -> None:
    """Why the gate refuses ``LimitNOFILE=`` instead of reading it as a reset: systemd keeps the earlier value."""
    _install(
        real_tmp,
        {
            "p-q.service": "[Service]\nExecStart=/bin/true\nLimitNOFILE=4096\nMemoryMax=1G\nCPUQuota=50%\nTasksMax=9\n",
            "p-q.service.d/10.conf": "[Service]\nLimitNOFILE=\nMemoryMax=\nCPUQuota=\nTasksMax=\n",
        },
    )
    (real_tmp / "cwd").mkdir()
    values = systemd_values(systemd_sees(real_tmp, ["p-q.service"], real_tmp / "cwd")["p-q.service"])
    assert values == {"LimitNOFILE": 4096, "MemoryMax": U64, "CPUQuota": None, "TasksMax": U64}


@pytest.mark.parametrize(
    ("value", "systemd"),
    [
        ("TasksMax=010", 8),
        ("LimitNOFILE=010", 8),
        ("CPUQuota=050%", 400_000),
        ("MemoryMax=0", U64),
        ("TasksMax=0", U64),
        ("LimitNOFILE=09", None),
        ("MemoryMax=1.999999999999999999999G", U64),
        ("MemoryMax=1G\x0b", U64),
    ],
)
def test_values_systemd_reads_differently_from_their_face_are_refused(
    real_tmp: Path, value: str, systemd: int | None
) -> None:
    """Octal counts, zero limits, overlong fractions, stray blanks: systemd reads another number or ignores
    the line (keeping the default); the gate refuses the value instead of guessing."""
    directive, _, text = value.partition("=")
    _install(real_tmp, {"p-q.service": f"[Service]\nExecStart=/bin/true\n{value}\n"})
    (real_tmp / "cwd").mkdir()
    seen = systemd_values(systemd_sees(real_tmp, ["p-q.service"], real_tmp / "cwd")["p-q.service"])
    assert seen[directive] == systemd
    with pytest.raises(LimitSyntaxError):
        BY_DIRECTIVE[directive].parse(text)


def test_a_symlinked_dropin_directory_is_read_depending_on_systemds_working_directory(real_tmp: Path) -> None:
    """systemd 252 checks a linked drop-in directory's link text from its own working directory: the same tree
    is read one way or the other depending on where systemd runs. The gate refuses such links (so does the
    packager) and reads through them to judge the values."""
    _install(real_tmp, {"shared.d/10.conf": "[Service]\nTasksMax=77\n"})
    (real_tmp / SEARCH[0]).mkdir(parents=True)
    (real_tmp / SEARCH[0] / "p-q.service").write_text("[Service]\nExecStart=/bin/true\nTasksMax=5\n")
    (real_tmp / INSTALL_DIR / "p-q.service.d").symlink_to("shared.d")
    (real_tmp / "cwd").mkdir()
    elsewhere = systemd_sees(real_tmp, ["p-q.service"], real_tmp / "cwd")["p-q.service"]
    beside = systemd_sees(real_tmp, ["p-q.service"], real_tmp / INSTALL_DIR)["p-q.service"]
    assert (elsewhere.dropins, systemd_values(elsewhere)["TasksMax"]) == ([], 5)
    assert (beside.dropins, systemd_values(beside)["TasksMax"]) == ([f"{INSTALL_DIR}/shared.d/10.conf"], 77)
    unit = read_unit_file(real_tmp / SEARCH[0] / "p-q.service", real_tmp)
    resolved = resolve_unit("p-q.service", "p-q.service", unit, search_path(real_tmp), real_tmp)
    assert [link.source for link in resolved.dropins.linked] == [f"{INSTALL_DIR}/p-q.service.d"]
    assert expected_values(resolved) == systemd_values(beside)


def test_alias_dropins_count_once_the_unit_is_enabled(real_tmp: Path) -> None:
    """``Alias=`` in a ``<unit>.d/`` drop-in: ``systemctl enable`` links it, then systemd reads its drop-ins."""
    _install(
        real_tmp,
        {
            "a-b.service": "[Service]\nExecStart=/bin/true\nTasksMax=5\n[Install]\nWantedBy=multi-user.target\n",
            "a-b.service.d/10.conf": "[Install]\nAlias=r-s.service\n",
            "r-.service.d/20.conf": "[Service]\nTasksMax=4000\n",
        },
    )
    (real_tmp / "cwd").mkdir()
    unit = read_unit_file(real_tmp / INSTALL_DIR / "a-b.service", real_tmp)
    before = systemd_sees(real_tmp, ["a-b.service"], real_tmp / "cwd")["a-b.service"]
    assert systemd_values(before)["TasksMax"] == 5
    enable(real_tmp, ["a-b.service"])
    after = systemd_sees(real_tmp, ["a-b.service"], real_tmp / "cwd")["a-b.service"]
    aliases = install_aliases("a-b.service", unit, search_path(real_tmp), real_tmp)
    assert aliases == ("r-s.service",)
    resolved = resolve_unit("a-b.service", "a-b.service", unit, search_path(real_tmp), real_tmp, aliases=aliases)
    assert [systemd_path(d.path, real_tmp) for d in resolved.dropins.applied] == after.dropins
    assert expected_values(resolved) == systemd_values(after)
    assert systemd_values(after)["TasksMax"] == 4000


# --------------------------------------------------------------------------- hostile drop-ins: the gate


def _put(repo: Path, rel: str, content: str | tuple[str, str]) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_bytes(content.encode())
    elif content[0] == "link":
        path.symlink_to(content[1])
    else:
        path.mkdir()


def _limits_in_shared_dropin(repo: Path) -> None:
    """The core units take TasksMax= from a shared ``ransomeye-.service.d/50-limits.conf`` (a valid layout)."""
    for unit in ("ransomeye-core.service", "ransomeye-ops.service"):
        path = repo / CORE / unit
        path.write_text(re.sub(r"(?m)^TasksMax=.*\n", "", path.read_text()))
    _put(repo, f"{CORE}/ransomeye-.service.d/50-limits.conf", "[Service]\n# every core unit\nTasksMax=64\n")


def _alias(name: str) -> Callable[[Path], None]:
    def setup(repo: Path) -> None:
        edit(repo / CORE_UNIT, "WantedBy=multi-user.target", f"WantedBy=multi-user.target\nAlias={name}")

    return setup


def _template(repo: Path) -> None:
    text = (repo / f"{CORE}/ransomeye-ops.service").read_text().replace("ransomeye-ops limits", "ransomeye-ops %i")
    _put(repo, f"{CORE}/ransomeye-worker@.service", text)


def _tuning_bundle(repo: Path) -> None:
    """The DPI bundle also ships ``ops/services/tuning``, a directory of drop-ins and no unit."""
    edit(repo / "Cargo.toml", 'assets = ["ops/services/dpi"]', 'assets = ["ops/services/dpi", "ops/services/tuning"]')


@dataclass(frozen=True)
class Hostile:
    """A tree change that lifts a limit; the gate must fail with a finding on ``subject``:``line``."""

    id: str
    files: Mapping[str, str | tuple[str, str]]
    subject: str
    line: int | None
    message: str
    # (unit systemd loads, directive): systemd itself must see that limit lifted; None for a packaging-only case.
    systemd: tuple[str, str] | None
    setup: Callable[[Path], None] | None = None
    enable: str | None = None


LIFT = "[Service]\nMemoryMax=16G\n"
HOSTILE = [
    Hostile(
        "type-wide service.d",
        {f"{CORE}/service.d/10-x.conf": LIFT},
        f"{CORE}/service.d/10-x.conf",
        2,
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE}/service.d/10-x.conf:2)",
        ("ransomeye-core.service", "MemoryMax"),
    ),
    Hostile(
        "dash prefix",
        {f"{CORE}/ransomeye-.service.d/10-x.conf": "[Service]\nTasksMax=infinity\n"},
        f"{CORE}/ransomeye-.service.d/10-x.conf",
        2,
        "ransomeye-ops.service TasksMax=infinity is infinity (no task limit) "
        f"(set by {CORE}/ransomeye-.service.d/10-x.conf:2)",
        ("ransomeye-ops.service", "TasksMax"),
    ),
    Hostile(
        "another bundle's dash prefix",
        {"ops/services/agent/ransomeye-.service.d/50-x.conf": "[Service]\nLimitNOFILE=1048576\n"},
        "ops/services/agent/ransomeye-.service.d/50-x.conf",
        2,
        "ransomeye-core.service LimitNOFILE=1048576 exceeds the cap 65536 "
        "(set by ops/services/agent/ransomeye-.service.d/50-x.conf:2)",
        ("ransomeye-core.service", "LimitNOFILE"),
    ),
    Hostile(
        "empty assignment",
        {f"{CORE_UNIT}.d/zz.conf": "[Service]\nCPUQuota=\n"},
        f"{CORE_UNIT}.d/zz.conf",
        2,
        f"ransomeye-core.service resets CPUQuota= to empty (no CPU quota) at {CORE_UNIT}.d/zz.conf:2",
        ("ransomeye-core.service", "CPUQuota"),
    ),
    Hostile(
        "empty assignment in service.d",
        {f"{CORE}/service.d/99-reset.conf": "[Service]\n\nMemoryMax=\n"},
        f"{CORE}/service.d/99-reset.conf",
        3,
        f"ransomeye-ops.service resets MemoryMax= to empty (no memory limit) at {CORE}/service.d/99-reset.conf:3",
        ("ransomeye-ops.service", "MemoryMax"),
    ),
    Hostile(
        "later-sorting file in a wider directory",
        {f"{CORE_UNIT}.d/10-lower.conf": "[Service]\nMemoryMax=1G\n", f"{CORE}/service.d/90-raise.conf": LIFT},
        f"{CORE}/service.d/90-raise.conf",
        2,
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE}/service.d/90-raise.conf:2)",
        ("ransomeye-core.service", "MemoryMax"),
    ),
    Hostile(
        "same-named drop-in overrides the shared limits",
        {f"{CORE_UNIT}.d/50-limits.conf": "[Service]\nTasksMax=100000\n"},
        f"{CORE_UNIT}.d/50-limits.conf",
        2,
        f"ransomeye-core.service TasksMax=100000 exceeds the cap 1024 (set by {CORE_UNIT}.d/50-limits.conf:2)",
        ("ransomeye-core.service", "TasksMax"),
        setup=_limits_in_shared_dropin,
    ),
    Hostile(
        "same-named empty drop-in masks the shared limits",
        {f"{CORE_UNIT}.d/50-limits.conf": ""},
        CORE_UNIT,
        None,
        f"ransomeye-core.service does not declare TasksMax= in [Service] ({CORE}/ransomeye-.service.d/"
        f"50-limits.conf:3 sets it, but {CORE_UNIT}.d/50-limits.conf masks that file)",
        ("ransomeye-core.service", "TasksMax"),
        setup=_limits_in_shared_dropin,
    ),
    Hostile(
        "drop-in symlink to /dev/null masks the shared limits",
        {f"{CORE_UNIT}.d/50-limits.conf": ("link", "/dev/null")},
        f"{CORE_UNIT}.d/50-limits.conf",
        None,
        f'{CORE_UNIT}.d/50-limits.conf is a symlink to "/dev/null", outside {CORE}: the packager refuses it, '
        "and systemd would read whatever that path holds on the host",
        ("ransomeye-core.service", "TasksMax"),
        setup=_limits_in_shared_dropin,
    ),
    Hostile(
        "drop-in directory named .conf masks the shared limits",
        {f"{CORE_UNIT}.d/50-limits.conf": ("dir", "")},
        f"{CORE_UNIT}.d/50-limits.conf",
        None,
        f"{CORE_UNIT}.d/50-limits.conf is not a regular file: systemd reads nothing from it, "
        "yet it masks every drop-in of the same name",
        ("ransomeye-core.service", "TasksMax"),
        setup=_limits_in_shared_dropin,
    ),
    Hostile(
        "drop-in symlink to a file that is not a .conf",
        {f"{CORE}/notes.txt": LIFT, f"{CORE_UNIT}.d/20-x.conf": ("link", "../notes.txt")},
        f"{CORE_UNIT}.d/20-x.conf",
        2,
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE_UNIT}.d/20-x.conf:2)",
        ("ransomeye-core.service", "MemoryMax"),
    ),
    Hostile(
        "drop-in symlink leaving the packaged tree",
        {"ui/dist/lift.txt": LIFT, f"{CORE_UNIT}.d/20-x.conf": ("link", "../../../../ui/dist/lift.txt")},
        f"{CORE_UNIT}.d/20-x.conf",
        None,
        f'{CORE_UNIT}.d/20-x.conf is a symlink to "../../../../ui/dist/lift.txt", outside {CORE}: the packager '
        "refuses it, and systemd would read whatever that path holds on the host",
        None,
    ),
    Hostile(
        "symlinked drop-in directory",
        {f"{CORE}/shared.d/10-x.conf": LIFT, f"{CORE_UNIT}.d": ("link", "shared.d")},
        f"{CORE_UNIT}.d",
        None,
        f'{CORE_UNIT}.d is a symlink to "shared.d": the packager refuses symlinked directories, '
        "and whether systemd reads the drop-ins there depends on its working directory",
        None,  # systemd 252 follows it only when the link text names a directory from its working directory
    ),
    Hostile(
        "an Alias= name's drop-ins",
        {f"{CORE}/ransomeye.service.d/10-x.conf": LIFT},
        f"{CORE}/ransomeye.service.d/10-x.conf",
        2,
        "ransomeye-core.service MemoryMax=16G exceeds the cap 2G "
        f"(set by {CORE}/ransomeye.service.d/10-x.conf:2, read once the unit is enabled under its Alias=)",
        ("ransomeye-core.service", "MemoryMax"),
        setup=_alias("ransomeye.service"),
        enable="ransomeye-core.service",
    ),
    Hostile(
        "an Alias= name's dash prefix",
        {f"{CORE}/rx-.service.d/10-x.conf": "[Service]\nCPUQuota=800%\n"},
        f"{CORE}/rx-.service.d/10-x.conf",
        2,
        "ransomeye-core.service CPUQuota=800% exceeds the cap 200% "
        f"(set by {CORE}/rx-.service.d/10-x.conf:2, read once the unit is enabled under its Alias=)",
        ("ransomeye-core.service", "CPUQuota"),
        setup=_alias("rx-core.service"),
        enable="ransomeye-core.service",
    ),
    Hostile(
        "a template instance's drop-ins",
        {f"{CORE}/ransomeye-worker@7.service.d/10-x.conf": LIFT},
        f"{CORE}/ransomeye-worker@7.service.d/10-x.conf",
        2,
        "ransomeye-worker@7.service MemoryMax=16G exceeds the cap 2G "
        f"(set by {CORE}/ransomeye-worker@7.service.d/10-x.conf:2)",
        ("ransomeye-worker@7.service", "MemoryMax"),
        setup=_template,
    ),
    Hostile(
        "a CR line end hides nothing",
        {f"{CORE_UNIT}.d/10-x.conf": "[Service]\nDescription=x\rMemoryMax=16G\n"},
        f"{CORE_UNIT}.d/10-x.conf",
        3,
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE_UNIT}.d/10-x.conf:3)",
        ("ransomeye-core.service", "MemoryMax"),
    ),
    Hostile(
        "an escaped backslash is not a continuation",
        {f"{CORE_UNIT}.d/10-x.conf": "[Service]\nDescription=x\\\\\nMemoryMax=16G\n"},
        f"{CORE_UNIT}.d/10-x.conf",
        3,
        f"ransomeye-core.service MemoryMax=16G exceeds the cap 2G (set by {CORE_UNIT}.d/10-x.conf:3)",
        ("ransomeye-core.service", "MemoryMax"),
    ),
    Hostile(
        "a bundle that ships only drop-ins",
        {"ops/services/tuning/service.d/10-x.conf": "[Service]\nCPUQuota=400%\n"},
        "ops/services/tuning/service.d/10-x.conf",
        2,
        "ransomeye-ops.service CPUQuota=400% exceeds the cap 200% (set by ops/services/tuning/service.d/10-x.conf:2)",
        ("ransomeye-ops.service", "CPUQuota"),
        setup=_tuning_bundle,
    ),
    Hostile(
        "two bundles install different files to one path",
        {f"{CORE}/service.d/10-x.conf": "[Service]\nTasksMax=64\n", "ops/services/dpi/service.d/10-x.conf": LIFT},
        f"{CORE}/service.d/10-x.conf",
        None,
        f"{CORE}/service.d/10-x.conf and ops/services/dpi/service.d/10-x.conf install to the same file "
        "service.d/10-x.conf with different contents: which one a host has depends on the order the products "
        "are installed",
        None,
    ),
]


def _resources_policy(repo: Path) -> ResourcesPolicy:
    path = repo / "governance" / "policies" / "resources.toml"
    return parse_resources(read_toml_file(path, "resources.toml"), "governance/policies/resources.toml")


def _install_release(repo: Path, root: Path) -> None:
    """Install the repository's directories of units as a release does: all into ROOT/usr/lib/systemd/system."""
    ws = load_workspace(repo)
    policy = _resources_policy(repo)
    for d in find_layout(repo, ws, policy, find_units(repo, ws, policy)).dirs:
        shutil.copytree(d, root / INSTALL_DIR, symlinks=True, dirs_exist_ok=True)


def _systemd_on_release(repo: Path, tmp_path: Path, names: Sequence[str], enabled: str | None) -> dict[str, Seen]:
    root = tmp_path / "root"
    _install_release(repo, root)
    if enabled is not None:
        enable(root, [enabled])
    (tmp_path / "cwd").mkdir()
    return systemd_sees(root, names, tmp_path / "cwd")


def _within_caps(values: Mapping[str, int | None], repo: Path) -> dict[str, bool]:
    """Each limit systemd holds: set, bounded and no larger than the policy's cap."""
    caps = {c.limit.directive: c.amount for c in _resources_policy(repo).caps}
    out = {}
    for directive, cap in caps.items():
        value, scale = values[directive], 100 if directive == "CPUQuota" else 1
        out[directive] = value is not None and value != U64 and value <= cap * scale
    return out


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_dropin_fails_the_gate_naming_the_file(repo: Path, real_tmp: Path, case: Hostile) -> None:
    if case.setup is not None:
        case.setup(repo)
    for rel, content in case.files.items():
        _put(repo, rel, content)
    result = next(g for g in run_gates(repo).gates if g.name == "resources")
    assert not result.passed
    found = [(f.subject, f.line, f.message) for f in result.findings]
    assert (case.subject, case.line, case.message) in found, found
    if case.systemd is not None:
        unit, directive = case.systemd
        seen = _systemd_on_release(repo, real_tmp, [unit], case.enable)
        assert not _within_caps(systemd_values(seen[unit]), repo)[directive], "systemd sees the limit lifted too"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return build_repo(tmp_path / "repo")


HARMLESS: list[tuple[str, Mapping[str, str | tuple[str, str]], Callable[[Path], None] | None]] = [
    ("a drop-in that lowers a limit", {f"{CORE_UNIT}.d/10-x.conf": "[Service]\nMemoryMax=512M\n"}, None),
    ("service.d lowering every unit", {f"{CORE}/service.d/10-x.conf": "[Service]\nTasksMax=16\n"}, None),
    ("limits in a shared dash-prefix drop-in", {}, _limits_in_shared_dropin),
    ("a limit in [Unit], ignored", {f"{CORE_UNIT}.d/10-x.conf": "[Unit]\nMemoryMax=16G\n"}, None),
    ("a limit in [service], ignored", {f"{CORE_UNIT}.d/10-x.conf": "[service]\nMemoryMax=16G\n"}, None),
    ("a file that is not .conf", {f"{CORE_UNIT}.d/override.conf.disabled": LIFT}, None),
    ("a hidden .conf", {f"{CORE_UNIT}.d/.override.conf": LIFT}, None),
    ("drop-ins for a unit we do not ship", {f"{CORE}/sshd.service.d/10-x.conf": LIFT}, None),
    ("a drop-in directory outside any unit directory", {"ui/dist/ransomeye-core.service.d/10-x.conf": LIFT}, None),
    (
        "a continuation swallows the line",
        {f"{CORE_UNIT}.d/10-x.conf": "[Service]\nDescription=x \\\nMemoryMax=16G\n"},
        None,
    ),
    (
        "a symlink to a lowering file in the tree",
        {f"{CORE}/lower.txt": "[Service]\nMemoryMax=1G\n", f"{CORE_UNIT}.d/10-x.conf": ("link", "../lower.txt")},
        None,
    ),
    (
        "two bundles ship the same file to one path",
        {
            f"{CORE}/service.d/10-x.conf": "[Service]\nTasksMax=16\n",
            "ops/services/dpi/service.d/10-x.conf": "[Service]\nTasksMax=16\n",
        },
        None,
    ),
]


@pytest.mark.parametrize(("files", "setup"), [c[1:] for c in HARMLESS], ids=[c[0] for c in HARMLESS])
def test_harmless_dropin_passes(
    repo: Path, real_tmp: Path, files: Mapping[str, str | tuple[str, str]], setup: Callable[[Path], None] | None
) -> None:
    """Negative controls: the gate passes, and systemd holds every limit of every unit within its cap."""
    if setup is not None:
        setup(repo)
    for rel, content in files.items():
        _put(repo, rel, content)
    result = next(g for g in run_gates(repo).gates if g.name == "resources")
    assert result.passed, [f.message for f in result.findings]
    names = sorted(p.name for p in (repo / "ops" / "services").rglob("*.service"))
    seen = _systemd_on_release(repo, real_tmp, names, None)
    for name in names:
        assert all(_within_caps(systemd_values(seen[name]), repo).values()), name


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {f"{CORE_UNIT}.d/10-x.conf": "[Service]\n\nLimitNOFILE=\n"},
            f'{CORE_UNIT}.d/10-x.conf:3: LimitNOFILE = "" is empty, which systemd ignores',
        ),
        (
            {f"{CORE}/service.d/10-x.conf": "[Service]\nMemoryMax=8X\n"},
            f'{CORE}/service.d/10-x.conf:2: MemoryMax = "8X" is not a size like 512M or 2G',
        ),
        (
            {f"{CORE}/ransomeye-.service.d/10-x.conf": "[Service]\nTasksMax=010\n"},
            f'{CORE}/ransomeye-.service.d/10-x.conf:2: TasksMax = "010" has a leading zero',
        ),
        (
            {f"{CORE_UNIT}.d/10-x.conf": "MemoryMax=1G\n"},
            f"{CORE_UNIT}.d/10-x.conf:1: MemoryMax= comes before any [Section] header",
        ),
        (
            {f"{CORE_UNIT}.d/10-x.conf": "[Service]\nnot an assignment\n"},
            f"{CORE_UNIT}.d/10-x.conf:2: expected a [Section] header or a Key=Value assignment",
        ),
        (
            {f"{CORE_UNIT}.d/10-x.conf": "[Install]\nAlias=%N-x.service\n"},
            f'{CORE_UNIT}.d/10-x.conf:2: Alias= "%N-x.service" uses quoting or specifiers',
        ),
    ],
    ids=["empty-limitnofile", "bad-size", "octal-count", "no-section", "syntax", "alias-specifier"],
)
def test_malformed_dropin_is_bad_input_naming_file_and_line(
    repo: Path, files: Mapping[str, str], expected: str
) -> None:
    for rel, content in files.items():
        _put(repo, rel, content)
    result = run_cli("--root", repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"check_gates: error: {expected}"), result.stderr
