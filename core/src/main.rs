//! `ransomeye-core`: the RansomEye core service.
//!
//! A deliberately small HTTP/1.1 server on `std::net` exposing `GET /health`.
//! One request per connection (`Connection: close`), served sequentially with
//! read/write timeouts. Standard library only; builds with Rust 1.63.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const NAME: &str = "ransomeye-core";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest request head (request line + headers) we accept.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn usage() -> String {
    format!(
        "Usage:
  {NAME} serve [--bind ADDR] --port N [--max-requests N]
  {NAME} --version
  {NAME} --help

Commands:
  serve    Serve HTTP/1.1 on ADDR:N (default ADDR 127.0.0.1).
           GET /health answers 200 application/json; other paths 404.
           Prints 'listening on ADDR:PORT' once bound (use --port 0 for any free port).
           --max-requests N: exit after answering N requests.
"
    )
}

#[derive(Debug, PartialEq)]
struct ServeOpts {
    bind: IpAddr,
    port: u16,
    max_requests: Option<u64>,
}

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Version,
    Serve(ServeOpts),
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let first = match args.first() {
        Some(a) => a.as_str(),
        None => return Err("missing command".to_string()),
    };
    match first {
        "--help" | "-h" if args.len() == 1 => Ok(Command::Help),
        "--version" | "-V" if args.len() == 1 => Ok(Command::Version),
        "serve" => parse_serve(&args[1..]),
        _ => Err(format!("unknown argument '{first}'")),
    }
}

fn parse_serve(args: &[String]) -> Result<Command, String> {
    let mut bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port = None;
    let mut max_requests = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let arg = arg.as_str();
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let value = match arg {
            "--bind" | "--port" | "--max-requests" => match it.next() {
                Some(v) => v.as_str(),
                None => return Err(format!("{arg} needs a value")),
            },
            _ => return Err(format!("unknown argument '{arg}'")),
        };
        match arg {
            "--bind" => {
                bind = value
                    .parse()
                    .map_err(|_| format!("--bind: '{value}' is not an IP address"))?
            }
            "--port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| format!("--port: '{value}' is not a port (0-65535)"))?,
                )
            }
            _ => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| format!("--max-requests: '{value}' is not a number"))?;
                if n == 0 {
                    return Err("--max-requests must be at least 1".to_string());
                }
                max_requests = Some(n);
            }
        }
    }
    match port {
        Some(port) => Ok(Command::Serve(ServeOpts {
            bind,
            port,
            max_requests,
        })),
        None => Err("serve needs --port N".to_string()),
    }
}

/// What reading a request head produced.
#[derive(Debug, PartialEq)]
enum Head {
    /// The peer closed (or timed out) without sending anything: not a request.
    Empty,
    Complete(Vec<u8>),
    /// Too large, cut short or timed out mid-way.
    Bad,
}

fn head_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn read_head<R: Read>(r: &mut R) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => {
                return if buf.is_empty() {
                    Head::Empty
                } else {
                    Head::Bad
                }
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = head_end(&buf) {
                    buf.truncate(end);
                    return Head::Complete(buf);
                }
                if buf.len() > MAX_HEAD {
                    return Head::Bad;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                return if buf.is_empty() {
                    Head::Empty
                } else {
                    Head::Bad
                }
            }
        }
    }
}

fn health_body() -> String {
    format!("{{\"status\":\"ok\",\"service\":\"{NAME}\",\"version\":\"{VERSION}\"}}")
}

fn response(status: u16, reason: &str, extra: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         {extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Build the response to a request head (`None`: the head was unusable).
fn respond(head: Option<&[u8]>) -> (u16, Vec<u8>) {
    let bad = || {
        (
            400,
            response(400, "Bad Request", "", "{\"error\":\"bad request\"}", false),
        )
    };
    let head = match head {
        Some(h) => h,
        None => return bad(),
    };
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(_) => return bad(),
    };
    let line = text.lines().next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") || !parts[1].starts_with('/') {
        return bad();
    }
    let (method, target) = (parts[0], parts[1]);
    let path = target.split('?').next().unwrap_or(target);
    if path != "/health" {
        let head_only = method == "HEAD";
        return (
            404,
            response(404, "Not Found", "", "{\"error\":\"not found\"}", head_only),
        );
    }
    match method {
        "GET" => (200, response(200, "OK", "", &health_body(), false)),
        "HEAD" => (200, response(200, "OK", "", &health_body(), true)),
        _ => (
            405,
            response(
                405,
                "Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "{\"error\":\"method not allowed\"}",
                false,
            ),
        ),
    }
}

/// Serve one connection. Returns whether it carried a request.
fn handle(mut stream: TcpStream) -> io::Result<bool> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let (_status, bytes) = match read_head(&mut stream) {
        Head::Empty => return Ok(false),
        Head::Complete(h) => respond(Some(&h)),
        Head::Bad => respond(None),
    };
    stream.write_all(&bytes)?;
    stream.flush()?;
    // Half-close, then drain briefly so unread request bytes do not turn the
    // close into a reset that could discard the response at the client.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(true)
}

fn serve_on(listener: TcpListener, max_requests: Option<u64>) {
    let mut served: u64 = 0;
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{NAME}: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match handle(stream) {
            Ok(true) => served += 1,
            Ok(false) => {}
            Err(e) => {
                eprintln!("{NAME}: connection error: {e}");
                served += 1;
            }
        }
        if let Some(max) = max_requests {
            if served >= max {
                break;
            }
        }
    }
}

fn serve(opts: &ServeOpts) -> Result<(), String> {
    let addr = SocketAddr::new(opts.bind, opts.port);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        // A closed stdout must not stop the service.
        let _ = writeln!(out, "listening on {local}");
        let _ = out.flush();
    }
    serve_on(listener, opts.max_requests);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Command::Help) => {
            let _ = io::stdout().write_all(usage().as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            let _ = writeln!(io::stdout(), "{NAME} {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(opts)) => match serve(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{NAME}: error: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{NAME}: error: {e}\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn status_of(raw: &[u8]) -> u16 {
        respond(Some(raw)).0
    }

    #[test]
    fn parses_serve_options() {
        let cmd = parse_args(&args(&["serve", "--port", "0", "--max-requests", "3"])).unwrap();
        assert_eq!(
            cmd,
            Command::Serve(ServeOpts {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                max_requests: Some(3)
            })
        );
        assert_eq!(parse_args(&args(&["--version"])).unwrap(), Command::Version);
        assert!(parse_args(&args(&["serve"])).is_err());
        assert!(parse_args(&args(&["serve", "--port", "70000"])).is_err());
        assert!(parse_args(&args(&["serve", "--port", "1", "--max-requests", "0"])).is_err());
        assert!(parse_args(&args(&["serve", "--bind", "nowhere", "--port", "1"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&[])).is_err());
    }

    #[test]
    fn routes_requests() {
        assert_eq!(status_of(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status_of(b"GET /health?verbose=1 HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status_of(b"POST /health HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status_of(b"garbage\r\n\r\n"), 400);
        assert_eq!(status_of(b"\xff\xfe\r\n\r\n"), 400);
        assert_eq!(respond(None).0, 400);
        let (_, head) = respond(Some(b"HEAD /health HTTP/1.1\r\n\r\n"));
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
    }

    #[test]
    fn reads_heads() {
        assert_eq!(read_head(&mut &b""[..]), Head::Empty);
        assert_eq!(read_head(&mut &b"GET / HTTP/1.1\r\n"[..]), Head::Bad);
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(read_head(&mut &big[..]), Head::Bad);
        let h = read_head(&mut &b"GET / HTTP/1.1\r\n\r\nBODY"[..]);
        assert_eq!(h, Head::Complete(b"GET / HTTP/1.1\r\n\r\n".to_vec()));
    }

    #[test]
    fn serves_health_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve_on(listener, Some(1)));
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        server.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Type: application/json\r\n"));
        assert!(reply.ends_with(&health_body()));
        assert_eq!(
            health_body(),
            format!(
                "{{\"status\":\"ok\",\"service\":\"ransomeye-core\",\"version\":\"{VERSION}\"}}"
            )
        );
    }
}
