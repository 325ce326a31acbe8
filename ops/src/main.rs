//! `ransomeye-ops`: operations helper.
//!
//! `ransomeye-ops limits FILE.service...` prints the resource limits set in the
//! `[Service]` section of systemd unit files. It follows the unit-file syntax
//! that matters here: `#`/`;` comments, backslash line continuation, repeated
//! sections, later assignments override earlier ones and an empty assignment
//! resets the setting. Drop-in directories are not read.

use std::io::{self, Write};
use std::process::ExitCode;

const NAME: &str = "ransomeye-ops";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The settings reported, in output order.
const KEYS: [&str; 4] = ["MemoryMax", "CPUQuota", "TasksMax", "LimitNOFILE"];

fn usage() -> String {
    format!(
        "Usage:
  {NAME} limits FILE.service...
  {NAME} --version
  {NAME} --help

Commands:
  limits   For each unit file, print MemoryMax, CPUQuota, TasksMax and LimitNOFILE
           from its [Service] section ('unset' when not set).
           Exits 1 if a file cannot be read.
"
    )
}

/// Split unit-file text into logical lines (comments dropped, continuations joined).
fn logical_lines(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut continuing = false;
    for raw in text.lines() {
        let t = raw.trim();
        if t.starts_with('#') || t.starts_with(';') || (!continuing && t.is_empty()) {
            continue;
        }
        let (body, more) = match t.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (t, false),
        };
        if continuing && !cur.is_empty() && !body.is_empty() {
            cur.push(' ');
        }
        cur.push_str(body);
        continuing = more;
        if !more {
            lines.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The reported limits of one unit file, in `KEYS` order (`None`: unset).
fn parse_limits(text: &str) -> [Option<String>; 4] {
    let mut values: [Option<String>; 4] = Default::default();
    let mut in_service = false;
    for line in logical_lines(text) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if let Some(i) = KEYS.iter().position(|k| *k == key.trim()) {
                let value = value.trim();
                values[i] = if value.is_empty() {
                    None
                } else {
                    Some(value.to_string())
                };
            }
        }
    }
    values
}

fn render(path: &str, values: &[Option<String>; 4]) -> String {
    let mut out = format!("{path}:\n");
    for (key, value) in KEYS.iter().zip(values.iter()) {
        out.push_str(&format!(
            "  {key}={}\n",
            value.as_deref().unwrap_or("unset")
        ));
    }
    out
}

fn limits(files: &[String]) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    for file in files {
        let text = match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    eprintln!("{NAME}: error: cannot read {file}: not valid UTF-8");
                    failed = true;
                    continue;
                }
            },
            Err(e) => {
                eprintln!("{NAME}: error: cannot read {file}: {e}");
                failed = true;
                continue;
            }
        };
        if out
            .write_all(render(file, &parse_limits(&text)).as_bytes())
            .is_err()
        {
            return ExitCode::from(1);
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let first = args.first().map(String::as_str);
    match first {
        Some("--help") | Some("-h") if args.len() == 1 => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        Some("--version") | Some("-V") if args.len() == 1 => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        Some("limits") => {
            let files = &args[1..];
            if files.iter().any(|f| f == "--help" || f == "-h") {
                let _ = io::stdout().write_all(usage().as_bytes());
                return ExitCode::SUCCESS;
            }
            if let Some(opt) = files.iter().find(|f| f.starts_with('-')) {
                eprintln!("{NAME}: error: unknown argument '{opt}'\n\n{}", usage());
                return ExitCode::from(2);
            }
            if files.is_empty() {
                eprintln!(
                    "{NAME}: error: limits needs at least one FILE.service\n\n{}",
                    usage()
                );
                return ExitCode::from(2);
            }
            limits(files)
        }
        Some(other) => {
            eprintln!("{NAME}: error: unknown argument '{other}'\n\n{}", usage());
            ExitCode::from(2)
        }
        None => {
            eprintln!("{NAME}: error: missing command\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "\
[Unit]
Description=RansomEye core
MemoryMax=1M

[Service]
ExecStart=/usr/bin/ransomeye-core serve --port 8443
# MemoryMax=9G
MemoryMax = 2G
CPUQuota=200%
LimitNOFILE=1024
; a comment
[Install]
WantedBy=multi-user.target
TasksMax=1

[Service]
LimitNOFILE=65536
";

    #[test]
    fn reads_service_section_only() {
        let v = parse_limits(UNIT);
        assert_eq!(v[0].as_deref(), Some("2G"));
        assert_eq!(v[1].as_deref(), Some("200%"));
        assert_eq!(v[2], None);
        assert_eq!(v[3].as_deref(), Some("65536"));
    }

    #[test]
    fn empty_assignment_resets_and_continuations_join() {
        let v = parse_limits(
            "[Service]\nMemoryMax=1G\nMemoryMax=\nTasksMax=\\\n  512\nCPUQuota=50%\\\n",
        );
        assert_eq!(v[0], None);
        assert_eq!(v[2].as_deref(), Some("512"));
        assert_eq!(v[1].as_deref(), Some("50%"));
        assert_eq!(parse_limits(""), [None, None, None, None]);
    }

    #[test]
    fn renders_unset() {
        let text = render(
            "a.service",
            &parse_limits("\u{feff}[Service]\nTasksMax=infinity\n"),
        );
        assert_eq!(
            text,
            "a.service:\n  MemoryMax=unset\n  CPUQuota=unset\n  TasksMax=infinity\n  LimitNOFILE=unset\n"
        );
    }
}
