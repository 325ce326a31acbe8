//! `ransomeye-sentinel`: canary (honey) files that reveal tampering.
//!
//! `plant DIR` writes a fixed set of canary files whose content is derived
//! only from their names, so `check DIR` needs no state: a canary that is
//! missing, replaced by something that is not a regular file, or whose bytes
//! differ from the expected content is reported. Names sort both first and
//! last so that directory walkers (and ransomware) reach them early.
//!
//! Standard library only; must build with Rust 1.63 for Linux and Windows.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

const NAME: &str = "ransomeye-sentinel";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const CANARIES: &[&str] = &[
    "0000-ransomeye-canary.docx",
    "0000-ransomeye-canary.xlsx",
    "0000-ransomeye-canary.pdf",
    "zzzz-ransomeye-canary.txt",
];

fn usage() -> String {
    format!(
        "Usage:
  {NAME} plant DIR
  {NAME} check DIR
  {NAME} --version
  {NAME} --help

Commands:
  plant DIR   Write the canary files into DIR (an existing directory). Canaries
              already present and intact are left alone; a modified one is
              reported and not overwritten (exit 1).
  check DIR   Print 'OK', 'MISSING' or 'MODIFIED' for each canary, then a summary.
              Exit status: 0 all intact, 1 a canary is missing or modified, 2 usage error.
"
    )
}

/// The expected bytes of canary `name`: plain, low-entropy text.
fn canary_content(name: &str) -> Vec<u8> {
    let mut text = format!(
        "RansomEye canary file: {name}\n\
         This file is monitored by {NAME}. Do not open, modify, move or delete it.\n\n"
    );
    for i in 0..64u32 {
        text.push_str(&format!(
            "{name} line {i:02}: quarterly figures, payroll, contracts, invoices, backups.\n"
        ));
    }
    text.into_bytes()
}

#[derive(Debug, PartialEq)]
enum State {
    Ok,
    Missing,
    Modified(String),
}

fn state_of(path: &Path, name: &str) -> State {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return State::Missing,
        Err(e) => return State::Modified(format!("cannot stat: {e}")),
    };
    if !meta.file_type().is_file() {
        return State::Modified("not a regular file".to_string());
    }
    let expected = canary_content(name);
    let mut actual = Vec::with_capacity(expected.len() + 1);
    let read = fs::File::open(path)
        .and_then(|f| f.take(expected.len() as u64 + 1).read_to_end(&mut actual));
    match read {
        Err(e) if e.kind() == io::ErrorKind::NotFound => State::Missing,
        Err(e) => State::Modified(format!("cannot read: {e}")),
        Ok(_) if actual == expected => State::Ok,
        Ok(_) => State::Modified("content differs".to_string()),
    }
}

fn create_canary(path: &Path, name: &str) -> io::Result<()> {
    // create_new: never follows or replaces whatever appeared at the path meanwhile.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(&canary_content(name))?;
    f.sync_all()
}

/// Returns whether every canary is now in place and intact.
fn plant<W: Write>(dir: &Path, out: &mut W) -> io::Result<bool> {
    let mut ok = true;
    for name in CANARIES {
        let path = dir.join(name);
        match state_of(&path, name) {
            State::Ok => writeln!(out, "UNCHANGED {}", path.display())?,
            State::Missing => match create_canary(&path, name) {
                Ok(()) => writeln!(out, "PLANTED {}", path.display())?,
                Err(e) => {
                    ok = false;
                    writeln!(out, "FAILED {} ({e})", path.display())?;
                }
            },
            State::Modified(why) => {
                ok = false;
                writeln!(out, "MODIFIED {} ({why}; not overwritten)", path.display())?;
            }
        }
    }
    Ok(ok)
}

/// Returns whether every canary is intact.
fn check<W: Write>(dir: &Path, out: &mut W) -> io::Result<bool> {
    let (mut intact, mut missing, mut modified) = (0, 0, 0);
    for name in CANARIES {
        let path = dir.join(name);
        match state_of(&path, name) {
            State::Ok => {
                intact += 1;
                writeln!(out, "OK {}", path.display())?;
            }
            State::Missing => {
                missing += 1;
                writeln!(out, "MISSING {}", path.display())?;
            }
            State::Modified(why) => {
                modified += 1;
                writeln!(out, "MODIFIED {} ({why})", path.display())?;
            }
        }
    }
    writeln!(
        out,
        "SUMMARY canaries={} ok={intact} missing={missing} modified={modified}",
        CANARIES.len()
    )?;
    Ok(missing == 0 && modified == 0)
}

fn run(cmd: &str, dir: &str) -> ExitCode {
    let path = Path::new(dir);
    let is_dir = fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    if cmd == "plant" && !is_dir {
        eprintln!("{NAME}: error: {dir} is not an existing directory");
        return ExitCode::from(2);
    }
    if cmd == "check" && !is_dir {
        // A vanished directory is itself a sign of tampering: report every canary.
        eprintln!("{NAME}: warning: {dir} is not an existing directory");
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = if cmd == "plant" {
        plant(path, &mut out)
    } else {
        check(path, &mut out)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) | Err(_) => ExitCode::from(1),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["--help"]
        | ["-h"]
        | ["plant", "--help"]
        | ["check", "--help"]
        | ["plant", "-h"]
        | ["check", "-h"] => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        ["--version"] | ["-V"] => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        [cmd @ "plant", dir] | [cmd @ "check", dir] if !dir.starts_with('-') => run(cmd, dir),
        _ => {
            let msg = match strs.as_slice() {
                [] => "missing command".to_string(),
                ["plant"] | ["check"] => format!("{} needs DIR", strs[0]),
                ["plant", _, extra, ..] | ["check", _, extra, ..] => {
                    format!("unexpected argument '{extra}'")
                }
                ["plant", opt] | ["check", opt] => format!("unknown argument '{opt}'"),
                [first, ..] => format!("unknown argument '{first}'"),
            };
            eprintln!("{NAME}: error: {msg}\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ransomeye-sentinel-test-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn content_is_deterministic_and_distinct() {
        assert_eq!(canary_content("a"), canary_content("a"));
        assert_ne!(canary_content(CANARIES[0]), canary_content(CANARIES[1]));
        assert!(canary_content(CANARIES[0]).len() > 4096);
    }

    #[test]
    fn plant_then_check_detects_tampering() {
        let dir = temp_dir("cycle");
        let mut out = Vec::new();
        assert!(plant(&dir, &mut out).unwrap());
        assert!(String::from_utf8(out).unwrap().starts_with("PLANTED "));
        let mut out = Vec::new();
        assert!(check(&dir, &mut out).unwrap());
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("SUMMARY canaries=4 ok=4 missing=0 modified=0\n"));

        // Re-planting leaves intact canaries alone.
        let mut out = Vec::new();
        assert!(plant(&dir, &mut out).unwrap());
        assert!(String::from_utf8(out).unwrap().starts_with("UNCHANGED "));

        fs::remove_file(dir.join(CANARIES[0])).unwrap();
        fs::write(dir.join(CANARIES[1]), b"encrypted!").unwrap();
        let mut extended = canary_content(CANARIES[2]);
        extended.push(b'x');
        fs::write(dir.join(CANARIES[2]), extended).unwrap();
        let mut out = Vec::new();
        assert!(!check(&dir, &mut out).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(&format!("MISSING {}", dir.join(CANARIES[0]).display())));
        assert!(out.contains(&format!("MODIFIED {}", dir.join(CANARIES[1]).display())));
        assert!(
            out.ends_with("SUMMARY canaries=4 ok=1 missing=1 modified=2\n"),
            "{out}"
        );

        // A modified canary is not overwritten by plant.
        let mut out = Vec::new();
        assert!(!plant(&dir, &mut out).unwrap());
        assert_eq!(fs::read(dir.join(CANARIES[1])).unwrap(), b"encrypted!");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_reports_all_missing() {
        let parent = temp_dir("gone");
        let mut out = Vec::new();
        assert!(!check(&parent.join("nope"), &mut out).unwrap());
        assert!(String::from_utf8(out).unwrap().contains("missing=4"));
        fs::remove_dir_all(&parent).unwrap();
    }
}
