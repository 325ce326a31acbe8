//! `ransomeye-loader`: reports what the agent's kernel side (eBPF file and
//! process sensors) would need on this host, and whether the host has it.
//! It only reads /proc and /sys; it loads nothing.
//!
//! Linux-only: it refuses to compile for any other target.

#[cfg(not(target_os = "linux"))]
compile_error!("ransomeye-loader is Linux-only");

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

const NAME: &str = "ransomeye-loader";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Oldest kernel with BPF ring buffers, CAP_BPF and CAP_PERFMON.
const MIN_KERNEL: (u32, u32) = (5, 8);
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn usage() -> String {
    format!(
        "Usage:
  {NAME} status
  {NAME} --version
  {NAME} --help

Commands:
  status   Print, as key=value lines, what the agent's kernel side needs
           (kernel >= {}.{}, BTF, bpffs, CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN)
           and whether this host and process provide it (kernel_side=ready or
           not-ready, with the missing pieces). bpffs is reported but not
           required (it can be mounted at load time). Reads /proc and /sys only.
",
        MIN_KERNEL.0, MIN_KERNEL.1
    )
}

/// `(major, minor)` from a kernel release such as `6.1.0-13-amd64`.
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The value of `key:` in /proc/self/status text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k == key {
            Some(v.trim())
        } else {
            None
        }
    })
}

fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Whether a bpf filesystem is mounted at /sys/fs/bpf, from /proc/mounts text.
fn bpffs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    })
}

fn report() -> Result<String, String> {
    let release = read_trimmed("/proc/sys/kernel/osrelease")
        .ok_or_else(|| "cannot read /proc/sys/kernel/osrelease (is /proc mounted?)".to_string())?;
    let version = parse_kernel_version(&release);
    let kernel_ok = version.map_or(false, |v| v >= MIN_KERNEL);
    let btf = Path::new("/sys/kernel/btf/vmlinux").is_file();
    let bpffs = fs::read_to_string("/proc/mounts")
        .map(|m| bpffs_mounted(&m))
        .unwrap_or(false);
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status_field(&status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok());
    let caps = cap_eff.unwrap_or(0);
    let (sys_admin, bpf, perfmon) = (
        has_cap(caps, CAP_SYS_ADMIN),
        has_cap(caps, CAP_BPF),
        has_cap(caps, CAP_PERFMON),
    );
    let privileged = sys_admin || (bpf && perfmon);

    let mut missing = Vec::new();
    if !kernel_ok {
        missing.push("kernel");
    }
    if !btf {
        missing.push("btf");
    }
    if !privileged {
        missing.push("capabilities");
    }
    let mut r = String::new();
    let mut kv = |k: &str, v: &str| r.push_str(&format!("{k}={v}\n"));
    kv("kernel_release", &release);
    kv(
        "kernel_required",
        &format!(">={}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
    );
    kv("kernel_ok", yes_no(kernel_ok));
    kv("btf_vmlinux", if btf { "available" } else { "missing" });
    kv("bpffs", if bpffs { "mounted" } else { "not-mounted" });
    let unpriv = read_trimmed("/proc/sys/kernel/unprivileged_bpf_disabled");
    kv(
        "unprivileged_bpf_disabled",
        unpriv.as_deref().unwrap_or("unknown"),
    );
    let lockdown = read_trimmed("/sys/kernel/security/lockdown");
    kv("lockdown", lockdown.as_deref().unwrap_or("unknown"));
    let cap_text = cap_eff
        .map(|c| format!("{c:016x}"))
        .unwrap_or_else(|| "unknown".to_string());
    kv("cap_eff", &cap_text);
    kv("cap_sys_admin", yes_no(sys_admin));
    kv("cap_bpf", yes_no(bpf));
    kv("cap_perfmon", yes_no(perfmon));
    kv(
        "seccomp",
        status_field(&status, "Seccomp").unwrap_or("unknown"),
    );
    kv(
        "missing",
        &if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(",")
        },
    );
    kv(
        "kernel_side",
        if missing.is_empty() {
            "ready"
        } else {
            "not-ready"
        },
    );
    Ok(r)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["--help"] | ["-h"] | ["status", "--help"] | ["status", "-h"] => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        ["--version"] | ["-V"] => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        ["status"] => match report() {
            Ok(text) => match io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            },
            Err(e) => {
                eprintln!("{NAME}: error: {e}");
                ExitCode::from(1)
            }
        },
        _ => {
            let msg = match strs.as_slice() {
                [] => "missing command".to_string(),
                ["status", extra, ..] => format!("unknown argument '{extra}'"),
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

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-13-amd64\n"), Some((6, 1)));
        assert_eq!(
            parse_kernel_version("5.15.153.1-microsoft-standard-WSL2"),
            Some((5, 15))
        );
        assert_eq!(parse_kernel_version("4.19"), Some((4, 19)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version("6"), None);
        assert!((5, 15) >= MIN_KERNEL && (4, 19) < MIN_KERNEL && (10, 0) >= MIN_KERNEL);
    }

    #[test]
    fn status_and_caps() {
        let status = "Name:\tcat\nSeccomp:\t2\nCapEff:\t000001ffffffffff\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Missing"), None);
        let caps = u64::from_str_radix(status_field(status, "CapEff").unwrap(), 16).unwrap();
        assert!(
            has_cap(caps, CAP_SYS_ADMIN) && has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON)
        );
        assert!(!has_cap(0x20_0000 - 1, CAP_SYS_ADMIN));
        assert!(has_cap(0x20_0000, CAP_SYS_ADMIN));
        assert!(!has_cap(u64::MAX, 64));
    }

    #[test]
    fn bpffs_detection() {
        assert!(bpffs_mounted(
            "proc /proc proc rw 0 0\nbpf /sys/fs/bpf bpf rw,nosuid 0 0\n"
        ));
        assert!(!bpffs_mounted("sysfs /sys sysfs rw 0 0\n"));
    }
}
