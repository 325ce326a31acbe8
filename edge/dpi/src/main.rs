//! `ransomeye-dpi`: inspects classic libpcap captures.
//!
//! Reads classic pcap files (microsecond or nanosecond timestamps, either byte
//! order, Ethernet link type with optional 802.1Q/802.1ad tags), decodes IPv4
//! TCP/UDP, counts packets per protocol and destination port, and flags SMB
//! (TCP 445) and RDP (TCP/UDP 3389) flows as lateral-movement indicators.
//! Structural errors in the file are reported (exit 2); packets too short for
//! their headers are only counted as undecodable. Never panics on bad input.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::process::ExitCode;

const NAME: &str = "ransomeye-dpi";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record accepted (the libpcap maximum snapshot length).
const MAX_RECORD: u32 = 262_144;
const TOP_PORTS: usize = 10;

fn usage() -> String {
    format!(
        "Usage:
  {NAME} inspect FILE.pcap
  {NAME} --version
  {NAME} --help

Commands:
  inspect FILE   Parse a classic libpcap capture (Ethernet) and print packet counts
                 per protocol, the top destination ports, and SMB (445) / RDP (3389)
                 flows as lateral-movement indicators.
                 Exit status: 0 parsed, 2 usage error, unreadable FILE or malformed capture.
"
    )
}

#[derive(Debug)]
enum PcapError {
    Io(io::Error),
    TooShort,
    Pcapng,
    BadMagic(u32),
    LinkType(u32),
    TruncatedRecord(u64),
    OversizedRecord(u64, u32),
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "read error: {e}"),
            PcapError::TooShort => {
                write!(f, "malformed capture: shorter than the 24-byte pcap header")
            }
            PcapError::Pcapng => write!(
                f,
                "unsupported format: pcapng (convert with 'editcap -F pcap')"
            ),
            PcapError::BadMagic(m) => {
                write!(f, "malformed capture: not a pcap file (magic 0x{m:08x})")
            }
            PcapError::LinkType(t) => write!(f, "unsupported link type {t} (only Ethernet, 1)"),
            PcapError::TruncatedRecord(n) => {
                write!(f, "malformed capture: packet record {n} is truncated")
            }
            PcapError::OversizedRecord(n, len) => {
                write!(
                    f,
                    "malformed capture: packet record {n} claims {len} bytes (max {MAX_RECORD})"
                )
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    big_endian: bool,
    nanosecond: bool,
    packets: u64,
    tcp: u64,
    udp: u64,
    ipv4_other: u64,
    non_ipv4: u64,
    undecodable: u64,
    dst_ports: HashMap<(Proto, u16), u64>,
    /// (service, proto, src, dst, port) -> packets
    lateral: BTreeMap<(&'static str, Proto, Ipv4Addr, Ipv4Addr, u16), u64>,
}

enum Packet {
    NonIpv4,
    Undecodable,
    Ipv4Other,
    L4 {
        proto: Proto,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dst_port: u16,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

/// Decode one Ethernet frame far enough to classify it.
fn classify(frame: &[u8]) -> Packet {
    decode(frame).unwrap_or(Packet::Undecodable)
}

fn decode(frame: &[u8]) -> Option<Packet> {
    let mut ethertype = be16(frame, 12)?;
    let mut off = 14;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        ethertype = be16(frame, off + 2)?;
        off += 4;
    }
    if ethertype != 0x0800 {
        return Some(Packet::NonIpv4);
    }
    let ip = frame.get(off..)?;
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = match ip[9] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return Some(Packet::Ipv4Other),
    };
    let (src, dst) = (ipv4_at(ip, 12)?, ipv4_at(ip, 16)?);
    if be16(ip, 6)? & 0x1fff != 0 {
        // A non-first fragment carries no transport header: count the protocol only.
        return Some(Packet::L4 {
            proto,
            src,
            dst,
            dst_port: 0,
        });
    }
    let dst_port = be16(ip, ihl + 2)?;
    Some(Packet::L4 {
        proto,
        src,
        dst,
        dst_port,
    })
}

fn lateral_service(proto: Proto, port: u16) -> Option<&'static str> {
    match (proto, port) {
        (Proto::Tcp, 445) => Some("smb"),
        (_, 3389) => Some("rdp"),
        _ => None,
    }
}

/// Read until `buf` is full or EOF; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn inspect<R: Read>(mut r: R) -> Result<Stats, PcapError> {
    let mut header = [0u8; 24];
    if read_full(&mut r, &mut header).map_err(PcapError::Io)? < 24 {
        return Err(PcapError::TooShort);
    }
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (big_endian, nanosecond) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xd4c3_b2a1 => (true, false),
        0xa1b2_3c4d => (false, true),
        0x4d3c_b2a1 => (true, true),
        0x0a0d_0d0a => return Err(PcapError::Pcapng),
        m => return Err(PcapError::BadMagic(m)),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    // The low 16 bits hold the link type; upper bits may carry FCS information.
    let link = u32_at(&header, 20) & 0xffff;
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut s = Stats {
        big_endian,
        nanosecond,
        ..Stats::default()
    };
    let mut rec = [0u8; 16];
    let mut frame = Vec::new();
    loop {
        let index = s.packets + 1;
        match read_full(&mut r, &mut rec).map_err(PcapError::Io)? {
            0 => break,
            16 => {}
            _ => return Err(PcapError::TruncatedRecord(index)),
        }
        let incl_len = u32_at(&rec, 8);
        if incl_len > MAX_RECORD {
            return Err(PcapError::OversizedRecord(index, incl_len));
        }
        frame.resize(incl_len as usize, 0);
        if read_full(&mut r, &mut frame).map_err(PcapError::Io)? < frame.len() {
            return Err(PcapError::TruncatedRecord(index));
        }
        s.packets += 1;
        match classify(&frame) {
            Packet::NonIpv4 => s.non_ipv4 += 1,
            Packet::Undecodable => s.undecodable += 1,
            Packet::Ipv4Other => s.ipv4_other += 1,
            Packet::L4 {
                proto,
                src,
                dst,
                dst_port,
            } => {
                match proto {
                    Proto::Tcp => s.tcp += 1,
                    Proto::Udp => s.udp += 1,
                }
                if dst_port != 0 {
                    *s.dst_ports.entry((proto, dst_port)).or_insert(0) += 1;
                    if let Some(service) = lateral_service(proto, dst_port) {
                        *s.lateral
                            .entry((service, proto, src, dst, dst_port))
                            .or_insert(0) += 1;
                    }
                }
            }
        }
    }
    Ok(s)
}

fn top_ports(s: &Stats) -> Vec<((Proto, u16), u64)> {
    let mut v: Vec<((Proto, u16), u64)> = s.dst_ports.iter().map(|(k, n)| (*k, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(TOP_PORTS);
    v
}

fn render(path: &str, s: &Stats) -> String {
    let mut r = format!(
        "file={path}\nbyte_order={}\ntimestamps={}\npackets={}\ntcp={}\nudp={}\nipv4_other={}\nnon_ipv4={}\nundecodable={}\n",
        if s.big_endian { "big-endian" } else { "little-endian" },
        if s.nanosecond { "nanosecond" } else { "microsecond" },
        s.packets,
        s.tcp,
        s.udp,
        s.ipv4_other,
        s.non_ipv4,
        s.undecodable
    );
    for ((proto, port), n) in top_ports(s) {
        r.push_str(&format!(
            "top_dst_port {}/{port} packets={n}\n",
            proto.name()
        ));
    }
    for ((service, proto, src, dst, port), n) in &s.lateral {
        r.push_str(&format!(
            "LATERAL-MOVEMENT {service} {}/{port} {src} -> {dst} packets={n}\n",
            proto.name()
        ));
    }
    r.push_str(&format!("lateral_movement_flows={}\n", s.lateral.len()));
    r
}

fn run(path: &str) -> ExitCode {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{NAME}: error: cannot open {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match inspect(BufReader::new(file)) {
        Ok(stats) => match io::stdout().write_all(render(path, &stats).as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("{NAME}: error: {path}: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["--help"] | ["-h"] | ["inspect", "--help"] | ["inspect", "-h"] => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        ["--version"] | ["-V"] => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        ["inspect", file] if !file.starts_with('-') => run(file),
        _ => {
            let msg = match strs.as_slice() {
                [] => "missing command".to_string(),
                ["inspect"] => "inspect needs FILE".to_string(),
                ["inspect", _, extra, ..] => format!("unexpected argument '{extra}'"),
                ["inspect", opt] => format!("unknown argument '{opt}'"),
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

    fn w32(v: &mut Vec<u8>, x: u32, be: bool) {
        v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
    }

    fn frame(ethertype: u16, proto: u8, dst: [u8; 4], dst_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1];
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&dst_port.to_be_bytes());
        ip.extend_from_slice(&[0u8; 16]);
        f.extend_from_slice(&ip);
        f
    }

    fn pcap(be: bool, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        w32(&mut v, 0xa1b2_c3d4, be);
        v.extend_from_slice(&if be { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        w32(&mut v, 0, be);
        w32(&mut v, 0, be);
        w32(&mut v, 65535, be);
        w32(&mut v, LINKTYPE_ETHERNET, be);
        for (i, f) in frames.iter().enumerate() {
            w32(&mut v, i as u32, be);
            w32(&mut v, 0, be);
            w32(&mut v, f.len() as u32, be);
            w32(&mut v, f.len() as u32, be);
            v.extend_from_slice(f);
        }
        v
    }

    fn sample() -> Vec<Vec<u8>> {
        vec![
            frame(0x0800, 6, [10, 0, 0, 2], 445),
            frame(0x0800, 6, [10, 0, 0, 2], 445),
            frame(0x0800, 17, [10, 0, 0, 3], 3389),
            frame(0x0800, 17, [8, 8, 8, 8], 53),
            frame(0x0800, 1, [10, 0, 0, 2], 0),
            frame(0x0806, 0, [0, 0, 0, 0], 0),
            vec![0u8; 10],
        ]
    }

    #[test]
    fn parses_both_byte_orders() {
        for be in [false, true] {
            let s = inspect(&pcap(be, &sample())[..]).unwrap();
            assert_eq!(s.big_endian, be);
            assert_eq!(
                (
                    s.packets,
                    s.tcp,
                    s.udp,
                    s.ipv4_other,
                    s.non_ipv4,
                    s.undecodable
                ),
                (7, 2, 2, 1, 1, 1)
            );
            assert_eq!(s.dst_ports[&(Proto::Tcp, 445)], 2);
            assert_eq!(s.lateral.len(), 2);
            let out = render("x.pcap", &s);
            assert!(out.contains("top_dst_port tcp/445 packets=2\n"), "{out}");
            assert!(out.contains("LATERAL-MOVEMENT smb tcp/445 10.0.0.1 -> 10.0.0.2 packets=2\n"));
            assert!(out.contains("LATERAL-MOVEMENT rdp udp/3389 10.0.0.1 -> 10.0.0.3 packets=1\n"));
        }
    }

    #[test]
    fn vlan_tagged_frames_are_decoded() {
        let mut f = frame(0x0800, 6, [10, 0, 0, 9], 3389);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let s = inspect(&pcap(false, &[f])[..]).unwrap();
        assert_eq!((s.tcp, s.lateral.len()), (1, 1));
    }

    #[test]
    fn rejects_malformed_files() {
        assert!(matches!(inspect(&b""[..]), Err(PcapError::TooShort)));
        assert!(matches!(
            inspect(&[0u8; 24][..]),
            Err(PcapError::BadMagic(0))
        ));
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        ng.resize(32, 0);
        assert!(matches!(inspect(&ng[..]), Err(PcapError::Pcapng)));
        let mut raw = pcap(false, &[]);
        raw[20] = 101;
        assert!(matches!(inspect(&raw[..]), Err(PcapError::LinkType(101))));
        let mut huge = pcap(false, &[]);
        huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert!(matches!(
            inspect(&huge[..]),
            Err(PcapError::OversizedRecord(1, _))
        ));
        let good = pcap(false, &sample());
        let cut = &good[..good.len() - 3];
        assert!(matches!(inspect(cut), Err(PcapError::TruncatedRecord(7))));
    }

    #[test]
    fn never_panics_on_garbage() {
        let good = pcap(true, &sample());
        for len in 0..good.len() {
            let _ = inspect(&good[..len]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut data = good.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 24 + (seed as usize % (data.len() - 24));
                data[at] = (seed >> 32) as u8;
            }
            if let Ok(s) = inspect(&data[..]) {
                let _ = render("fuzz", &s);
            }
        }
    }
}
