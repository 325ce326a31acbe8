"""The audit report for people and machines: text (terminal), JSON and a self-contained HTML page.

The HTML is one file with inline CSS, no script and no external resource:
the verdict first, then every failure by name, the checks, a diagram of the
supply chain (steps in dependency order, coloured by the functionary's role),
a timeline of the steps, and the details. Every string from the release
folder is escaped: the folder is the thing under audit, not trusted input.
Reports are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from html import escape
from pathlib import Path

from release.archive import write_bytes_atomic
from release.attest import command_text
from release.audit.evidence import LayoutStep, step_depths
from release.audit.model import ArchiveInfo, AuditReport, Check, StepInfo


def report_json(report: AuditReport) -> bytes:
    """The report as JSON (schema ``ransomeye.audit/v1``): sorted keys, two-space indent, final newline."""
    return (json.dumps(report.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_json(report: AuditReport, path: Path) -> None:
    """Write :func:`report_json` to ``path`` atomically; :class:`BadInputError` if it cannot be written."""
    write_bytes_atomic(path, report_json(report), "the report")


def write_html(report: AuditReport, path: Path) -> None:
    """Write :func:`render_html` to ``path`` atomically; :class:`BadInputError` if it cannot be written."""
    write_bytes_atomic(path, render_html(report).encode(), "the report")


def size_text(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def commit_text(report: AuditReport) -> str:
    """The source commit, or why it is not known."""
    if report.source_commit:
        return report.source_commit
    if report.provenance is not None and report.provenance.verified:
        return "(not recorded: built from a tree without git)"
    return "(unknown: no verified provenance)"


# --- text -----------------------------------------------------------------------


def printable(line: str) -> str:
    """``line`` with every control, format, separator or unassigned character escaped (``\\x1b``, ``\\u202e``).

    Every string of a report can come from the folder under audit; escaped,
    none can move the cursor, clear the screen, reorder text or start a line
    of its own (a forged ``Verdict:`` line).
    """
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNPRINTABLE or c == "\\" else c
        for c in line
    )


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def render_text(report: AuditReport) -> str:
    """A plain-text account for the terminal: verdict, checks, failures, steps, gates, archives.

    Every line passes through :func:`printable`.
    """
    lines = [
        f"RansomEye release audit of {report.release_dir}",
        f"Verdict: {report.verdict}",
        f"Release {report.version or '(unknown version)'}, source commit {commit_text(report)}, "
        f"owner key {report.owner_keyid[:8]}, layout expires {report.layout_expires or '?'}",
        "",
        "Checks:",
    ]
    width = max((len(c.name) for c in report.checks), default=0)
    lines += [f"  {c.status[:4].upper()} {c.name:<{width}}  {_check_summary(c)}" for c in report.checks]
    if report.findings:
        lines += ["", f"Failures ({len(report.findings)}):"]
        lines += [f"  - {f.text()}" for f in report.findings]
    if report.steps:
        lines += ["", "Steps:"]
        for s in report.steps:
            rv = "no link" if s.link is None else f"rc {s.return_value}"
            who = f"{s.role} {s.keyid[:8]}" if s.keyid else s.role
            lines.append(
                f"  {s.name:<22} {who:<16} {rv:<8} {s.materials:>3} materials -> {s.products:>2} products"
                f"  {_seconds(s.duration):>7}  {command_text(s.command) if s.command else '-'}"
            )
    if report.sources:
        lines += ["", "Sources (each binary's inputs, from the compiler's dep-info, as the build link records them):"]
        width = max(len(b.binary) for b in report.sources)
        for b in report.sources:
            paths = [p for p, _ in b.sources]
            shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
            lines.append(f"  {b.binary:<{width}}  {len(paths):>3} file{'s' if len(paths) != 1 else ' '}  {shown}")
    if report.gates:
        lines += ["", "Gates:"]
        lines += [f"  {'PASS' if g.passed else 'FAIL'} {g.name}: {g.reason}" for g in report.gates]
    if report.archives:
        lines += ["", "Archives:"]
        for a in report.archives:
            sbom = (
                f"SBOM {a.sbom.components} components, crates "
                + ", ".join(f"{c.name} {c.version} ({c.licenses})" for c in a.sbom.crates)
                if a.sbom
                else "no SBOM"
            )
            lines.append(
                f"  {a.name:<38} {size_text(a.size):>10}  {len(a.members):>3} files  "
                f"sha256 {(a.sha256 or '?')[:16]}  signature {'ok' if a.signature_ok else 'BAD'}  {sbom}"
            )
    p = report.provenance
    if p is not None:
        lines += [
            "",
            f"Provenance: {p.file} ({'verified' if p.verified else 'NOT verified'}), builder {p.builder_id}, "
            f"{p.started or '?'} .. {p.finished or '?'}, {len(p.subjects)} subjects",
        ]
    return "".join(printable(line) + "\n" for line in lines)  # a line break inside a line is escaped too


# --- HTML -----------------------------------------------------------------------

_CSS = """
:root { --ok:#1a7f37; --ok-bg:#dafbe1; --bad:#cf222e; --bad-bg:#ffebe9; --ink:#1f2328; --muted:#59636e;
  --line:#d1d9e0; --paper:#ffffff; --bg:#f6f8fa; --build:#0969da; --release:#8250df; --other:#9a6700; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif; color:var(--ink);
  background:var(--bg); }
main, header > div { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding: 28px 0 22px; color:#fff; }
header.ok { background: linear-gradient(90deg,#1a7f37,#2da44e); }
header.fail { background: linear-gradient(90deg,#a40e26,#cf222e); }
.badge { display:inline-block; font-size:28px; font-weight:700; letter-spacing:.04em; padding:4px 16px;
  border:3px solid #fff; border-radius:8px; }
header h1 { margin:12px 0 8px; font-size:22px; font-weight:600; }
header dl { display:grid; grid-template-columns:max-content 1fr; gap:2px 16px; margin:0; font-size:14px; }
header dt { opacity:.8; } header dd { margin:0; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; }
section { background:var(--paper); border:1px solid var(--line); border-radius:10px; margin:20px 0; padding:18px 22px; }
h2 { margin:0 0 12px; font-size:18px; }
h3 { margin:18px 0 6px; font-size:16px; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:13px; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
.pass { color:var(--ok); font-weight:700; } .failed { color:var(--bad); font-weight:700; }
ol.failures { margin:0; padding-left:22px; } ol.failures li { margin:4px 0; }
.tag { display:inline-block; font-size:12px; padding:0 7px; border-radius:10px; background:#eef1f4; color:var(--muted);
  margin-right:6px; font-family:ui-monospace,monospace; }
section.failures { border-color:var(--bad); background:var(--bad-bg); }
.checks { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:10px; }
.check { border:1px solid var(--line); border-left:5px solid var(--ok); border-radius:6px; padding:8px 10px; }
.check.bad { border-left-color:var(--bad); background:var(--bad-bg); }
.check b { display:block; } .check span { color:var(--muted); font-size:13px; }
.chain { display:flex; align-items:center; gap:6px; overflow-x:auto; padding:6px 2px 10px; }
.col { display:flex; flex-direction:column; gap:8px; }
.arrow { color:var(--muted); font-size:26px; padding:0 2px; }
.node { width:172px; border:1px solid var(--line); border-top:5px solid var(--other); border-radius:8px;
  padding:6px 9px; background:#fff; font-size:12.5px; box-shadow:0 1px 2px rgba(0,0,0,.06); }
.node.build { border-top-color:var(--build); } .node.release { border-top-color:var(--release); }
.node.bad { background:var(--bad-bg); border-color:var(--bad); }
.node b { font-size:13.5px; display:block; } .node .meta { color:var(--muted); }
.legend { font-size:12.5px; color:var(--muted); margin-top:4px; }
.sw { display:inline-block; width:12px; height:12px; border-radius:3px; vertical-align:-1px; margin:0 4px 0 12px; }
.sw.build { background:var(--build); } .sw.release { background:var(--release); } .sw.bad { background:var(--bad); }
.gantt td.bar { width:70%; vertical-align:middle; } .num { white-space:nowrap; text-align:right; }
.track { display:block; background:#eef1f4; border-radius:4px; }
.seg { fill:var(--other); } .seg.build { fill:var(--build); } .seg.release { fill:var(--release); }
details summary { cursor:pointer; color:var(--build); margin:6px 0; }
.archive { border:1px solid var(--line); border-radius:8px; padding:10px 14px; margin:10px 0; }
.archive h3 { margin:0 0 4px; }
footer { max-width:1180px; margin:0 auto 40px; padding:0 24px; color:var(--muted); font-size:13px; }
"""


# Nothing but the one style block above may apply: no script, no inline style, nothing fetched, no form.
CSP = (
    f"default-src 'none'; style-src 'sha256-{base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()}'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _check_summary(c: Check) -> str:
    """A check's one line: its summary, or why it was skipped."""
    return f"skipped: {c.skipped}" if c.skipped is not None else c.summary


def _ok(passed: bool, yes: str = "✔", no: str = "✘") -> str:
    return f'<span class="pass">{yes}</span>' if passed else f'<span class="failed">{no}</span>'


def _role_class(role: str) -> str:
    return role if role in ("build", "release") else "other"


def _bad_steps(report: AuditReport) -> set[str]:
    subjects = {f.subject for f in report.findings}
    bad = set()
    for s in report.steps:
        if s.link is None or not s.signature_ok or s.return_value != 0 or s.name in subjects or s.link in subjects:
            bad.add(s.name)
    return bad


def _diagram(report: AuditReport, bad: set[str]) -> str:
    steps = tuple(LayoutStep(s.name, (), (), s.depends_on, ()) for s in report.steps)
    depth = step_depths(steps)
    columns: dict[int, list[StepInfo]] = {}
    for s in report.steps:
        columns.setdefault(depth.get(s.name, 0), []).append(s)
    parts = []
    for i, col in enumerate(sorted(columns)):
        if i:
            parts.append('<div class="arrow">→</div>')
        nodes = []
        for s in columns[col]:
            classes = f"node {_role_class(s.role)}" + (" bad" if s.name in bad else "")
            status = "no link" if s.link is None else f"rc {_e(s.return_value)}"
            nodes.append(
                f'<div class="{classes}"><b>{_ok(s.name not in bad)} {_e(s.name)}</b>'
                f'<div class="meta">{_e(s.role)} · <code>{_e((s.keyid or "—")[:8])}</code></div>'
                f'<div class="meta">{status} · {s.materials} in → {s.products} out · {_seconds(s.duration)}</div></div>'
            )
        parts.append(f'<div class="col">{"".join(nodes)}</div>')
    legend = (
        '<div class="legend">Columns follow the layout\'s artifact rules (each step consumes the products of the '
        'steps to its left). Functionary:<span class="sw build"></span>build key'
        '<span class="sw release"></span>release key<span class="sw bad"></span>failed</div>'
    )
    return f'<div class="chain">{"".join(parts)}</div>{legend}'


def _parse(moment: str | None) -> datetime | None:
    """A link's time, or None unless it is an ISO time with its zone (times without one cannot be compared)."""
    try:
        parsed = datetime.fromisoformat(moment) if moment else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _timeline(report: AuditReport) -> str:
    spans = [(s, _parse(s.started), _parse(s.finished)) for s in report.steps]
    timed = [(s, a, b) for s, a, b in spans if a is not None and b is not None]
    if not timed:
        return '<p class="legend">The links record no start and finish times.</p>'
    t0 = min(a for _, a, _ in timed)
    t1 = max(b for _, _, b in timed)
    total = max((t1 - t0).total_seconds(), 1e-6)
    rows = []
    for s, a, b in spans:
        if a is None or b is None:
            bar = '<span class="legend">not recorded</span>'
        else:
            left = (a - t0).total_seconds() / total * 100
            width = (b - a).total_seconds() / total * 100
            bar = (
                f'<svg class="track" width="100%" height="16"><rect class="seg {_role_class(s.role)}" '
                f'x="{left:.2f}%" width="{max(width, 0.4):.2f}%" height="16" rx="4"/></svg>'
            )
        offset = "—" if a is None else f"+{(a - t0).total_seconds():.1f} s"
        rows.append(
            f"<tr><td>{_e(s.name)}</td><td class='num' title='{_e(s.started or '')}'>{offset}</td>"
            f"<td class='num'>{_seconds(s.duration)}</td><td class='bar'>{bar}</td></tr>"
        )
    head = "<tr><th>Step</th><th>Start</th><th>Duration</th><th>Timeline</th></tr>"
    return (
        f'<table class="gantt">{head}{"".join(rows)}</table>'
        f'<p class="legend">From {_e(t0.isoformat())} to {_e(t1.isoformat())} ({total:.1f} s).</p>'
    )


def _rows(cells: Iterable[Iterable[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)


def _archive(a: ArchiveInfo) -> str:
    head = (
        f'<div class="archive"><h3>{_ok(a.signature_ok)} {_e(a.name)}</h3>'
        f'<div class="legend">from step <b>{_e(a.step)}</b> · {size_text(a.size)} · {len(a.members)} files · '
        f"signature {'valid' if a.signature_ok else 'NOT valid'} · sha256 <code>{_e(a.sha256 or '?')}</code></div>"
    )
    if a.sbom is None:
        sbom = '<p class="failed">No readable SBOM.</p>'
    else:
        crates = _rows((_e(c.name), _e(c.version), _e(c.licenses)) for c in a.sbom.crates)
        sbom = (
            f"<p>SBOM <code>{_e(a.sbom.file)}</code>: CycloneDX {_e(a.sbom.spec_version)}, "
            f"{a.sbom.components} components ({a.sbom.files} files), serial <code>{_e(a.sbom.serial_number)}</code>, "
            f"Rust std {_e(a.sbom.toolchain or 'not listed')}.</p>"
            f"<table><tr><th>Crate</th><th>Version</th><th>Licence</th></tr>{crates}</table>"
        )
    members = _rows(
        (f"<code>{_e(m.path)}</code>", size_text(m.size), f"<code>{_e(m.sha256)}</code>") for m in a.members
    )
    files = (
        f"<details><summary>{len(a.members)} files inside</summary>"
        f"<table><tr><th>Path</th><th>Size</th><th>sha256</th></tr>{members}</table></details>"
    )
    return head + sbom + files + "</div>"


def render_html(report: AuditReport) -> str:
    """The report as one self-contained HTML page (one style block, no script, nothing fetched).

    Every string from the folder is HTML-escaped, and the page's
    Content-Security-Policy (:data:`CSP`) lets nothing but its own style
    block apply, so even a string that escaped escaping could run no script,
    style nothing and fetch nothing.
    """
    title = f"RansomEye {report.version or ''} release audit: {report.verdict}"
    sections = [
        _html_failures(report),
        _html_checks(report),
        _html_steps(report),
        _html_sources(report),
        _html_gates(report),
        _html_archives(report),
        _html_provenance(report),
        _html_keys(report),
        _html_folder(report),
    ]
    footer = (
        "<footer>Generated offline by <code>release/audit/audit.py</code> from the release folder and the owner's "
        "public key only. Re-run: <code>python3 release/audit/audit.py "
        f"{_e(report.release_dir)} --owner-key OWNER.pub --html report.html</code></footer>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"{_html_header(report)}<main>{''.join(sections)}</main>{footer}</body></html>\n"
    )


def _html_header(report: AuditReport) -> str:
    ok = report.verified
    facts = [
        ("Release", f"RansomEye {report.version or '(unknown version)'}"),
        ("Source commit", commit_text(report)),
        ("Release folder", report.release_dir),
        ("Owner key", report.owner_keyid),
        ("Layout expires", report.layout_expires or "?"),
        ("Audited at", report.audited_at),
    ]
    return (
        f'<header class="{"ok" if ok else "fail"}"><div>'
        f'<div class="badge">{"✔ VERIFIED" if ok else "✘ " + _e(report.verdict)}</div>'
        f"<h1>RansomEye {_e(report.version or '')} — release audit</h1><dl>"
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
        + "</dl></div></header>"
    )


def _html_failures(report: AuditReport) -> str:
    if not report.findings:
        return ""
    items = "".join(
        f'<li><span class="tag">{_e(f.check)}</span><b>{_e(f.subject)}</b>: {_e(f.message)}</li>'
        for f in report.findings
    )
    heading = f"<h2>Failures ({len(report.findings)})</h2>"
    return f'<section class="failures">{heading}<ol class="failures">{items}</ol></section>'


def _html_checks(report: AuditReport) -> str:
    checks = "".join(
        f'<div class="check{"" if c.passed else " bad"}"><b>{_ok(c.passed, no="⊘" if c.skipped else "✘")} '
        f'{_e(c.title)}</b><span class="tag">{_e(c.name)}</span><span>{_e(_check_summary(c))}</span></div>'
        for c in report.checks
    )
    return f'<section><h2>Checks</h2><div class="checks">{checks}</div></section>'


def _html_steps(report: AuditReport) -> str:
    """The supply-chain diagram, the timeline and the table of steps."""
    if not report.steps:
        return ""
    bad = _bad_steps(report)
    steps = _rows(
        (
            f"{_ok(s.name not in bad)} <b>{_e(s.name)}</b>",
            _e(s.role),
            f"<code>{_e((s.keyid or '—')[:16])}</code>",
            f"<code>{_e(command_text(s.command) if s.command else '—')}</code>",
            _e(s.started or "—"),
            _e(s.finished or "—"),
            _e("—" if s.return_value is None else s.return_value),
            str(s.materials),
            str(s.products),
        )
        for s in report.steps
    )
    return (
        f"<section><h2>Supply chain</h2>{_diagram(report, bad)}</section>"
        f"<section><h2>Timeline</h2>{_timeline(report)}</section>"
        "<section><h2>Steps</h2><table><tr><th>Step</th><th>Role</th><th>Functionary key</th><th>Command</th>"
        "<th>Started</th><th>Finished</th><th>Return</th><th>Materials</th><th>Products</th></tr>"
        f"{steps}</table></section>"
    )


def _html_sources(report: AuditReport) -> str:
    if not report.sources:
        return ""
    rows = _rows(
        (
            f"<code>{_e(b.binary)}</code>",
            str(len(b.sources)),
            f"<details><summary>{len(b.sources)} source files</summary><table>"
            + _rows((f"<code>{_e(p)}</code>", f"<code>{_e(h)}</code>") for p, h in b.sources)
            + "</table></details>",
        )
        for b in report.sources
    )
    return (
        "<section><h2>Source provenance</h2><p class='legend'>What the compiler read for each binary (its "
        "dep-info), as the build link records it: every file is gated source, none from a forbidden path.</p>"
        f"<table><tr><th>Binary</th><th>Files</th><th>Sources</th></tr>{rows}</table></section>"
    )


def _html_gates(report: AuditReport) -> str:
    gates = (
        _rows((_ok(g.passed, "PASS", "FAIL"), f"<b>{_e(g.name)}</b>", _e(g.reason), _e(g.source)) for g in report.gates)
        if report.gates
        else "<tr><td colspan='4'>No gate results.</td></tr>"
    )
    return (
        "<section><h2>Release gates</h2><table><tr><th></th><th>Gate</th><th>Result</th><th>Read from</th></tr>"
        f"{gates}</table></section>"
    )


def _html_provenance(report: AuditReport) -> str:
    p = report.provenance
    if p is None:
        return ""
    facts = [
        ("File", p.file),
        ("Signature", "verified with the build key" if p.verified else "NOT verified"),
        ("Signed by", ", ".join(k[:16] for k in p.signed_by) or "nobody"),
        ("Build type", p.build_type or "?"),
        ("Builder", p.builder_id or "?"),
        ("Invocation", p.invocation_id or "?"),
        ("Started / finished", f"{p.started or '?'} / {p.finished or '?'}"),
        ("Source commit", p.source_commit or "?"),
        ("Toolchains", "; ".join(f"{t}: {v}" for t, v in p.toolchains) or "?"),
    ]
    subjects = _rows((f"<code>{_e(n)}</code>", f"<code>{_e(h)}</code>") for n, h in p.subjects)
    return (
        "<section><h2>SLSA provenance</h2><table>"
        + _rows((f"<b>{_e(k)}</b>", _e(v)) for k, v in facts)
        + f"</table><h3>Subjects</h3><table><tr><th>Archive</th><th>sha256</th></tr>{subjects}</table></section>"
    )


def _html_archives(report: AuditReport) -> str:
    archives = "".join(_archive(a) for a in report.archives) or "<p>No archives.</p>"
    return f"<section><h2>Archives and their SBOMs</h2>{archives}</section>"


def _html_keys(report: AuditReport) -> str:
    keys = _rows((_e(k.role), f"<code>{_e(k.keyid)}</code>", _e(", ".join(k.steps))) for k in report.keys)
    return (
        "<section><h2>Keys</h2><table><tr><th>Role</th><th>in-toto keyid</th><th>Signs</th></tr>"
        f"{keys}</table></section>"
    )


def _html_folder(report: AuditReport) -> str:
    files = "".join(f"<li><code>{_e(n)}</code></li>" for n in report.files)
    return (
        f"<section><h2>The folder</h2><details><summary>{len(report.files)} files audited</summary>"
        f"<ul>{files}</ul></details><p class='legend'>in-toto-verify: {_e(report.in_toto.reason)}</p></section>"
    )
