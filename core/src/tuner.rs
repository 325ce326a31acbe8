//! `ransomeye-tuner`: sizing recommendations for the core service.
//!
//! Simple, explainable arithmetic (all integers, MiB):
//! * `reserved_mib`    = max(256, memory/4): left to the OS, page cache and other processes.
//! * `worker_threads`  = cpus, lowered so each worker gets at least 64 MiB.
//! * `io_threads`      = max(1, cpus/4).
//! * `memory_per_worker_mib` = (memory - reserved) / worker_threads.
//! * `queue_capacity_per_worker` = memory_per_worker_mib * 64, clamped to 64..=65536:
//!   with events of up to 4 KiB a full queue uses at most a quarter of the worker's budget.
//! * `queue_capacity_total` = queue_capacity_per_worker * worker_threads.

use std::io::{self, Write};
use std::process::ExitCode;

const NAME: &str = "ransomeye-tuner";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const MIN_RESERVED_MIB: u64 = 256;
const MIN_WORKER_MIB: u64 = 64;
const EVENTS_PER_MIB: u64 = 64;
const MIN_QUEUE: u64 = 64;
const MAX_QUEUE: u64 = 65_536;
const MAX_MEMORY_MIB: u64 = 64 * 1024 * 1024; // 64 TiB
const MAX_CPUS: u64 = 4096;

fn usage() -> String {
    format!(
        "Usage:
  {NAME} recommend --memory-mib N --cpus N
  {NAME} --version
  {NAME} --help

Prints recommended worker threads, queue sizes and memory budget per worker
for a host with N MiB of memory and N CPUs, as key=value lines.
"
    )
}

#[derive(Debug, PartialEq)]
struct Plan {
    memory_mib: u64,
    cpus: u64,
    reserved_mib: u64,
    worker_threads: u64,
    io_threads: u64,
    memory_per_worker_mib: u64,
    queue_capacity_per_worker: u64,
    queue_capacity_total: u64,
}

fn recommend(memory_mib: u64, cpus: u64) -> Result<Plan, String> {
    if memory_mib == 0 {
        return Err("--memory-mib must be greater than zero".to_string());
    }
    if cpus == 0 {
        return Err("--cpus must be greater than zero".to_string());
    }
    if memory_mib > MAX_MEMORY_MIB {
        return Err(format!(
            "--memory-mib {memory_mib} is implausibly large (max {MAX_MEMORY_MIB})"
        ));
    }
    if cpus > MAX_CPUS {
        return Err(format!(
            "--cpus {cpus} is implausibly large (max {MAX_CPUS})"
        ));
    }
    let reserved_mib = (memory_mib / 4).max(MIN_RESERVED_MIB);
    let needed = reserved_mib + MIN_WORKER_MIB;
    if memory_mib < needed {
        return Err(format!(
            "--memory-mib {memory_mib} is too small: at least {needed} MiB needed \
             ({reserved_mib} reserved + {MIN_WORKER_MIB} for one worker)"
        ));
    }
    let usable = memory_mib - reserved_mib;
    let worker_threads = cpus.min(usable / MIN_WORKER_MIB).max(1);
    let memory_per_worker_mib = usable / worker_threads;
    let queue_capacity_per_worker =
        (memory_per_worker_mib * EVENTS_PER_MIB).clamp(MIN_QUEUE, MAX_QUEUE);
    Ok(Plan {
        memory_mib,
        cpus,
        reserved_mib,
        worker_threads,
        io_threads: (cpus / 4).max(1),
        memory_per_worker_mib,
        queue_capacity_per_worker,
        queue_capacity_total: queue_capacity_per_worker * worker_threads,
    })
}

fn render(p: &Plan) -> String {
    format!(
        "memory_mib={}\ncpus={}\nreserved_mib={}\nworker_threads={}\nio_threads={}\n\
         memory_per_worker_mib={}\nqueue_capacity_per_worker={}\nqueue_capacity_total={}\n",
        p.memory_mib,
        p.cpus,
        p.reserved_mib,
        p.worker_threads,
        p.io_threads,
        p.memory_per_worker_mib,
        p.queue_capacity_per_worker,
        p.queue_capacity_total
    )
}

enum Command {
    Help,
    Version,
    Recommend { memory_mib: u64, cpus: u64 },
}

/// Errors: (message, whether to print the usage too).
fn parse_args(args: &[String]) -> Result<Command, (String, bool)> {
    let first = match args.first() {
        Some(a) => a.as_str(),
        None => return Err(("missing command".to_string(), true)),
    };
    match first {
        "--help" | "-h" if args.len() == 1 => return Ok(Command::Help),
        "--version" | "-V" if args.len() == 1 => return Ok(Command::Version),
        "recommend" => {}
        _ => return Err((format!("unknown argument '{first}'"), true)),
    }
    let mut memory = None;
    let mut cpus = None;
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--memory-mib" => &mut memory,
            "--cpus" => &mut cpus,
            other => return Err((format!("unknown argument '{other}'"), true)),
        };
        let value = match it.next() {
            Some(v) => v,
            None => return Err((format!("{arg} needs a value"), true)),
        };
        let n = value.trim().parse::<u64>().map_err(|_| {
            (
                format!("{arg}: '{value}' is not a non-negative integer"),
                false,
            )
        })?;
        *slot = Some(n);
    }
    match (memory, cpus) {
        (Some(memory_mib), Some(cpus)) => Ok(Command::Recommend { memory_mib, cpus }),
        _ => Err((
            "recommend needs --memory-mib N and --cpus N".to_string(),
            true,
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = io::stdout();
    let mut out = out.lock();
    match parse_args(&args) {
        Ok(Command::Help) => {
            let _ = out.write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            let _ = writeln!(out, "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Command::Recommend { memory_mib, cpus }) => match recommend(memory_mib, cpus) {
            Ok(plan) => match out.write_all(render(&plan).as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            },
            Err(e) => {
                eprintln!("{NAME}: error: {e}");
                ExitCode::from(2)
            }
        },
        Err((e, with_usage)) => {
            if with_usage {
                eprintln!("{NAME}: error: {e}\n\n{}", usage());
            } else {
                eprintln!("{NAME}: error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_host() {
        let p = recommend(8192, 4).unwrap();
        assert_eq!(p.reserved_mib, 2048);
        assert_eq!(p.worker_threads, 4);
        assert_eq!(p.io_threads, 1);
        assert_eq!(p.memory_per_worker_mib, 1536);
        assert_eq!(p.queue_capacity_per_worker, 65_536);
        assert_eq!(p.queue_capacity_total, 4 * 65_536);
        assert!(p.reserved_mib + p.worker_threads * p.memory_per_worker_mib <= p.memory_mib);
    }

    #[test]
    fn small_host_limits_workers_by_memory() {
        // 512 MiB: 256 reserved, 256 usable -> at most 4 workers of 64 MiB.
        let p = recommend(512, 16).unwrap();
        assert_eq!(p.reserved_mib, 256);
        assert_eq!(p.worker_threads, 4);
        assert_eq!(p.memory_per_worker_mib, 64);
        assert_eq!(p.queue_capacity_per_worker, 4096);
        assert_eq!(p.io_threads, 4);
    }

    #[test]
    fn rejects_zero_and_too_small() {
        assert!(recommend(0, 4).is_err());
        assert!(recommend(4096, 0).is_err());
        assert!(recommend(300, 1).is_err());
        assert!(recommend(320, 1).is_ok());
        assert!(recommend(u64::MAX, 1).is_err());
        assert!(recommend(1024, u64::MAX).is_err());
    }

    #[test]
    fn budget_never_exceeds_memory() {
        for memory in [320u64, 1000, 4096, 65_536, MAX_MEMORY_MIB] {
            for cpus in [1u64, 2, 3, 7, 64, MAX_CPUS] {
                let p = recommend(memory, cpus).unwrap();
                assert!(p.worker_threads >= 1 && p.worker_threads <= cpus);
                assert!(p.memory_per_worker_mib >= MIN_WORKER_MIB);
                assert!(p.reserved_mib + p.worker_threads * p.memory_per_worker_mib <= memory);
            }
        }
    }

    #[test]
    fn parses_arguments() {
        let a = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            parse_args(&a(&["recommend", "--cpus", "2", "--memory-mib", "1024"])),
            Ok(Command::Recommend {
                memory_mib: 1024,
                cpus: 2
            })
        ));
        assert!(parse_args(&a(&["recommend", "--cpus", "-1", "--memory-mib", "1024"])).is_err());
        assert!(parse_args(&a(&["recommend", "--cpus", "2"])).is_err());
        assert!(parse_args(&a(&["recommend", "--cpus"])).is_err());
        assert!(parse_args(&a(&["--nope"])).is_err());
        assert!(render(&recommend(1024, 2).unwrap()).contains("worker_threads=2\n"));
    }
}
