//! `ransomeye-agent`: scans a directory tree for ransomware indicators.
//!
//! Indicators: known ransom-note file names (case-insensitive), extensions
//! that ransomware families append to encrypted files, and high Shannon
//! entropy (> 7.5 bits/byte over the first 64 KiB of files of at least 4 KiB).
//! Symbolic links (and, on Windows, other name-surrogate reparse points such
//! as junctions) are never followed.
//!
//! Standard library only; must build with Rust 1.63 for Linux and Windows.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const NAME: &str = "ransomeye-agent";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bytes examined for the entropy check.
const ENTROPY_WINDOW: u64 = 64 * 1024;
/// Smaller files are not entropy-checked: too few bytes for a meaningful value.
const ENTROPY_MIN_SIZE: u64 = 4 * 1024;
/// Bits per byte above which content looks encrypted.
const ENTROPY_THRESHOLD: f64 = 7.5;

/// Known ransom-note file names, lower case.
const RANSOM_NOTES: &[&str] = &[
    "readme_decrypt.txt",
    "readme_for_decrypt.txt",
    "how_to_recover_files.txt",
    "how_to_decrypt.txt",
    "how_to_decrypt_files.txt",
    "how_to_restore_files.txt",
    "decrypt_instructions.txt",
    "decrypt_instructions.html",
    "help_decrypt.txt",
    "help_decrypt.html",
    "help_restore_files.txt",
    "restore_files.txt",
    "restore-my-files.txt",
    "recovery_instructions.txt",
    "read_me_to_decrypt.txt",
    "_readme.txt",
    "!!!_read_me_!!!.txt",
    "#decrypt_my_files#.txt",
    "@please_read_me@.txt",
    "files_encrypted.txt",
];

/// Extensions appended to encrypted files, lower case, without the dot.
const ENCRYPTED_EXTENSIONS: &[&str] = &[
    "locked",
    "encrypted",
    "crypt",
    "crypted",
    "crypto",
    "cry",
    "cerber",
    "locky",
    "zepto",
    "wcry",
    "wncry",
    "wnry",
    "ryk",
    "crypz",
    "cryp1",
    "lockbit",
    "akira",
    "conti",
    "phobos",
    "djvu",
    "petya",
    "vvv",
    "ecc",
];

fn usage() -> String {
    format!(
        "Usage:
  {NAME} scan DIR
  {NAME} --version
  {NAME} --help

Commands:
  scan DIR   Walk DIR (symbolic links are not followed) and print one line
             'SUSPICIOUS <reason> <path>' per finding, then a summary line.
             Reasons: ransom-note, encrypted-extension, high-entropy.
             Exit status: 0 clean, 1 findings, 2 usage error.
"
    )
}

/// Shannon entropy of `data` in bits per byte (0.0 ..= 8.0).
fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

fn is_ransom_note(file_name: &str) -> bool {
    let lower = file_name.to_ascii_lowercase();
    RANSOM_NOTES.iter().any(|n| *n == lower)
}

fn has_encrypted_extension(file_name: &str) -> bool {
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            let ext = ext.to_ascii_lowercase();
            ENCRYPTED_EXTENSIONS.iter().any(|e| *e == ext)
        }
        _ => false,
    }
}

#[derive(Debug, Default, PartialEq)]
struct Summary {
    files: u64,
    dirs: u64,
    symlinks_skipped: u64,
    findings: u64,
    suspicious_files: u64,
    errors: u64,
}

/// Entropy of the first `ENTROPY_WINDOW` bytes, or `None` if the file is too small.
fn file_entropy(path: &Path) -> io::Result<Option<f64>> {
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(ENTROPY_WINDOW)
        .read_to_end(&mut buf)?;
    if (buf.len() as u64) < ENTROPY_MIN_SIZE {
        return Ok(None);
    }
    Ok(Some(shannon_entropy(&buf)))
}

fn check_file<W: Write, E: Write>(
    path: &Path,
    size: u64,
    s: &mut Summary,
    out: &mut W,
    err: &mut E,
) -> io::Result<()> {
    s.files += 1;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut reasons: Vec<&str> = Vec::new();
    if is_ransom_note(&name) {
        reasons.push("ransom-note");
    }
    if has_encrypted_extension(&name) {
        reasons.push("encrypted-extension");
    }
    if size >= ENTROPY_MIN_SIZE {
        match file_entropy(path) {
            Ok(Some(h)) if h > ENTROPY_THRESHOLD => reasons.push("high-entropy"),
            Ok(_) => {}
            Err(e) => {
                s.errors += 1;
                writeln!(err, "{NAME}: warning: cannot read {}: {e}", path.display())?;
            }
        }
    }
    if !reasons.is_empty() {
        s.suspicious_files += 1;
    }
    for reason in reasons {
        s.findings += 1;
        writeln!(out, "SUSPICIOUS {reason} {}", path.display())?;
    }
    Ok(())
}

/// Walk `root` depth-first in name order without following links.
fn scan<W: Write, E: Write>(root: &Path, out: &mut W, err: &mut E) -> io::Result<Summary> {
    let mut s = Summary::default();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        s.dirs += 1;
        let reader = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) => {
                s.errors += 1;
                writeln!(err, "{NAME}: warning: cannot list {}: {e}", dir.display())?;
                continue;
            }
        };
        let mut entries = Vec::new();
        for entry in reader {
            match entry {
                Ok(e) => entries.push(e),
                Err(e) => {
                    s.errors += 1;
                    writeln!(err, "{NAME}: warning: cannot list {}: {e}", dir.display())?;
                }
            }
        }
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let path = entry.path();
            // symlink_metadata never follows links (DirEntry::metadata may on Windows).
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    s.errors += 1;
                    writeln!(err, "{NAME}: warning: cannot stat {}: {e}", path.display())?;
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                s.symlinks_skipped += 1;
            } else if ft.is_dir() {
                subdirs.push(path);
            } else if ft.is_file() {
                check_file(&path, meta.len(), &mut s, out, err)?;
            }
        }
        // Reverse so the stack pops subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    writeln!(
        out,
        "SUMMARY files={} dirs={} symlinks_skipped={} findings={} suspicious_files={} errors={}",
        s.files, s.dirs, s.symlinks_skipped, s.findings, s.suspicious_files, s.errors
    )?;
    Ok(s)
}

fn run_scan(dir: &str) -> ExitCode {
    let root = Path::new(dir);
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            eprintln!("{NAME}: error: {dir} is not a directory");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{NAME}: error: cannot access {dir}: {e}");
            return ExitCode::from(2);
        }
    }
    let stdout = io::stdout();
    let stderr = io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    match scan(root, &mut out, &mut err) {
        Ok(s) if s.findings > 0 => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        // Output closed (e.g. a pipe into `head`): the findings cannot be reported.
        Err(_) => ExitCode::from(1),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["--help"] | ["-h"] | ["scan", "--help"] | ["scan", "-h"] => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        ["--version"] | ["-V"] => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        ["scan", dir] if !dir.starts_with('-') => run_scan(dir),
        _ => {
            let msg = match strs.as_slice() {
                [] => "missing command".to_string(),
                ["scan"] => "scan needs DIR".to_string(),
                ["scan", _, extra, ..] => format!("unexpected argument '{extra}'"),
                ["scan", opt] => format!("unknown argument '{opt}'"),
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("ransomeye-agent-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(&[]), 0.0);
        assert_eq!(shannon_entropy(&[7u8; 1000]), 0.0);
        assert!((shannon_entropy(&[0u8, 1].repeat(500)) - 1.0).abs() < 1e-9);
        let all: Vec<u8> = (0..=255u8).collect();
        assert!((shannon_entropy(&all.repeat(16)) - 8.0).abs() < 1e-9);
        assert!(shannon_entropy(&noise(64 * 1024, 42)) > ENTROPY_THRESHOLD);
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        assert!(shannon_entropy(text.as_bytes()) < 5.0);
    }

    #[test]
    fn names_and_extensions() {
        assert!(is_ransom_note("README_DECRYPT.txt"));
        assert!(is_ransom_note("how_to_recover_files.TXT"));
        assert!(!is_ransom_note("README.txt"));
        assert!(has_encrypted_extension("report.docx.LOCKED"));
        assert!(has_encrypted_extension("a.encrypted"));
        assert!(!has_encrypted_extension(".locked"));
        assert!(!has_encrypted_extension("locked"));
        assert!(!has_encrypted_extension("notes.txt"));
    }

    #[test]
    fn scan_reports_findings() {
        let dir = temp_dir();
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("notes.txt"), "hello ".repeat(1000)).unwrap();
        fs::write(dir.join("How_To_Recover_Files.txt"), "pay").unwrap();
        fs::write(dir.join("sub").join("budget.xlsx.locked"), "x").unwrap();
        fs::write(dir.join("sub").join("blob.bin"), noise(8192, 7)).unwrap();
        fs::write(dir.join("small.bin"), noise(4095, 9)).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let s = scan(&dir, &mut out, &mut err).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(s.files, 5);
        assert_eq!(s.dirs, 2);
        assert_eq!(s.findings, 3, "{out}");
        assert!(out.contains("SUSPICIOUS ransom-note "));
        assert!(out.contains(&format!(
            "SUSPICIOUS encrypted-extension {}",
            dir.join("sub").join("budget.xlsx.locked").display()
        )));
        assert!(out.contains(&format!(
            "SUSPICIOUS high-entropy {}",
            dir.join("sub").join("blob.bin").display()
        )));
        assert!(out.ends_with(
            "SUMMARY files=5 dirs=2 symlinks_skipped=0 findings=3 suspicious_files=3 errors=0\n"
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn scan_does_not_follow_symlinks() {
        let outside = temp_dir();
        fs::write(outside.join("README_DECRYPT.txt"), "pay").unwrap();
        let dir = temp_dir();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("README_DECRYPT.txt"), dir.join("note-link"))
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let s = scan(&dir, &mut out, &mut err).unwrap();
        assert_eq!((s.files, s.findings, s.symlinks_skipped), (0, 0, 2));
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }
}
