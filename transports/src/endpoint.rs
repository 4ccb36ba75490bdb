//! Endpoint URLs: `unix:///path`, `tcp://host:port`, `vsock://[CID]:PORT[/path]`,
//! `unixgram:///path`, `unixpacket:///path` and `stdio:`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a transport listens or dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path`: unix stream socket; the path is everything after `unix://`.
    Unix(PathBuf),
    /// `tcp://host:port`, kept as `"host:port"`; an empty host means all addresses.
    Tcp(String),
    /// `vsock://:1024`, `vsock://2:1024/connect`; `path` is `""` or starts with `/`.
    Vsock {
        cid: Option<u32>,
        port: u32,
        path: String,
    },
    /// `unixgram:///path` (vfkit).
    Unixgram(PathBuf),
    /// `unixpacket:///path` (bess, SOCK_SEQPACKET).
    Unixpacket(PathBuf),
    /// `stdio:` (only where a caller allows it).
    Stdio,
}

/// Why an endpoint URL was rejected; `Display` is one line naming the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointError(String);

impl EndpointError {
    fn new(msg: String) -> Self {
        EndpointError(msg)
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

const EXPECTED: &str = "expected unix, tcp, vsock, unixgram or unixpacket";

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url == "stdio:" || url == "stdio" || url == "stdio://" {
            return Ok(Endpoint::Stdio);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            if let Some(rest) = url.strip_prefix("stdio:") {
                return Err(EndpointError::new(format!(
                    "unsupported stdio endpoint {url:?}: {rest:?} given, only \"stdio:\" is accepted"
                )));
            }
            return Err(EndpointError::new(format!(
                "missing scheme in {url:?} ({EXPECTED}, e.g. unix:///path)"
            )));
        };
        if rest.contains(|c: char| c.is_control()) {
            return Err(EndpointError::new(format!(
                "control character in {}",
                url.escape_debug()
            )));
        }
        match scheme {
            "unix" => Ok(Endpoint::Unix(parse_path(url, rest)?)),
            "unixgram" => Ok(Endpoint::Unixgram(parse_path(url, rest)?)),
            "unixpacket" => Ok(Endpoint::Unixpacket(parse_path(url, rest)?)),
            "tcp" => parse_tcp(url, rest),
            "vsock" => parse_vsock(url, rest),
            _ => Err(EndpointError::new(format!(
                "unknown scheme {scheme:?} in {url:?} ({EXPECTED})"
            ))),
        }
    }
}

fn parse_path(url: &str, rest: &str) -> Result<PathBuf, EndpointError> {
    if rest.is_empty() {
        return Err(EndpointError::new(format!("empty path in {url:?}")));
    }
    Ok(PathBuf::from(rest))
}

fn parse_port(url: &str, port: &str) -> Result<u16, EndpointError> {
    if port.is_empty() {
        return Err(EndpointError::new(format!("missing port in {url:?}")));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::new(format!(
            "bad port {port:?} in {url:?} (expected 0-65535)"
        )));
    }
    port.parse::<u16>()
        .map_err(|_| EndpointError::new(format!("bad port {port:?} in {url:?} (expected 0-65535)")))
}

fn parse_tcp(url: &str, rest: &str) -> Result<Endpoint, EndpointError> {
    // Tolerate one trailing slash (`tcp://host:port/`), reject any other path.
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('/') {
        return Err(EndpointError::new(format!(
            "unexpected path in {url:?} (expected tcp://host:port)"
        )));
    }
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let Some((ip6, tail)) = after.split_once(']') else {
            return Err(EndpointError::new(format!("missing ']' in {url:?}")));
        };
        if ip6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(EndpointError::new(format!(
                "bad IPv6 address {ip6:?} in {url:?}"
            )));
        }
        let Some(port) = tail.strip_prefix(':') else {
            return Err(EndpointError::new(format!("missing port in {url:?}")));
        };
        (&hostport[..ip6.len() + 2], port)
    } else {
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(EndpointError::new(format!("missing port in {url:?}")));
        };
        if host.contains(':') {
            return Err(EndpointError::new(format!(
                "bad host {host:?} in {url:?} (write IPv6 addresses as [addr]:port)"
            )));
        }
        (host, port)
    };
    if host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(EndpointError::new(format!("bad host {host:?} in {url:?}")));
    }
    let port = parse_port(url, port)?;
    Ok(Endpoint::Tcp(format!("{host}:{port}")))
}

fn parse_vsock(url: &str, rest: &str) -> Result<Endpoint, EndpointError> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some((cid, port)) = authority.rsplit_once(':') else {
        return Err(EndpointError::new(format!(
            "missing port in {url:?} (expected vsock://[CID]:PORT[/path])"
        )));
    };
    let cid = if cid.is_empty() {
        None
    } else if cid.bytes().all(|b| b.is_ascii_digit()) {
        Some(
            cid.parse::<u32>()
                .map_err(|_| EndpointError::new(format!("bad vsock CID {cid:?} in {url:?}")))?,
        )
    } else {
        return Err(EndpointError::new(format!(
            "bad vsock CID {cid:?} in {url:?} (expected a decimal number or nothing)"
        )));
    };
    if port.is_empty() {
        return Err(EndpointError::new(format!("missing port in {url:?}")));
    }
    let port = if port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u32>().ok()
    } else {
        None
    }
    .ok_or_else(|| {
        EndpointError::new(format!(
            "bad vsock port {port:?} in {url:?} (expected 0-4294967295)"
        ))
    })?;
    Ok(Endpoint::Vsock {
        cid,
        port,
        path: path.to_string(),
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(hp) => write!(f, "tcp://{hp}"),
            Endpoint::Vsock { cid, port, path } => match cid {
                Some(cid) => write!(f, "vsock://{cid}:{port}{path}"),
                None => write!(f, "vsock://:{port}{path}"),
            },
            Endpoint::Unixgram(p) => write!(f, "unixgram://{}", p.display()),
            Endpoint::Unixpacket(p) => write!(f, "unixpacket://{}", p.display()),
            Endpoint::Stdio => f.write_str("stdio:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<Endpoint>().unwrap_err().to_string()
    }

    #[test]
    fn parses_all_schemes() {
        assert_eq!(
            ok("unix:///tmp/a b.sock"),
            Endpoint::Unix("/tmp/a b.sock".into())
        );
        assert_eq!(ok("unix://rel/x"), Endpoint::Unix("rel/x".into()));
        assert_eq!(
            ok("unixgram:///v.sock"),
            Endpoint::Unixgram("/v.sock".into())
        );
        assert_eq!(ok("unixpacket:///b"), Endpoint::Unixpacket("/b".into()));
        assert_eq!(
            ok("tcp://127.0.0.1:5555"),
            Endpoint::Tcp("127.0.0.1:5555".into())
        );
        assert_eq!(ok("tcp://:0"), Endpoint::Tcp(":0".into()));
        assert_eq!(
            ok("tcp://localhost:80/"),
            Endpoint::Tcp("localhost:80".into())
        );
        assert_eq!(ok("tcp://[::1]:65535"), Endpoint::Tcp("[::1]:65535".into()));
        assert_eq!(
            ok("vsock://:1024"),
            Endpoint::Vsock {
                cid: None,
                port: 1024,
                path: String::new()
            }
        );
        assert_eq!(
            ok("vsock://2:1024/connect"),
            Endpoint::Vsock {
                cid: Some(2),
                port: 1024,
                path: "/connect".into()
            }
        );
        assert_eq!(ok("stdio:"), Endpoint::Stdio);
    }

    #[test]
    fn display_roundtrips() {
        for s in [
            "unix:///tmp/x.sock",
            "tcp://127.0.0.1:80",
            "tcp://:8080",
            "tcp://[::1]:1",
            "vsock://:1024",
            "vsock://3:5/connect",
            "unixgram:///g",
            "unixpacket:///p",
            "stdio:",
        ] {
            assert_eq!(ok(s).to_string(), s);
        }
    }

    #[test]
    fn errors_are_one_clear_line() {
        assert_eq!(
            err("foo://x"),
            "unknown scheme \"foo\" in \"foo://x\" (expected unix, tcp, vsock, unixgram or unixpacket)"
        );
        assert_eq!(
            err("tcp://127.0.0.1"),
            "missing port in \"tcp://127.0.0.1\""
        );
        assert_eq!(
            err("tcp://127.0.0.1:"),
            "missing port in \"tcp://127.0.0.1:\""
        );
        assert_eq!(err("unix://"), "empty path in \"unix://\"");
        assert!(err("tcp://h:65536").starts_with("bad port \"65536\""));
        assert!(err("tcp://h:-1").starts_with("bad port"));
        assert!(err("tcp://::1:80").contains("IPv6"));
        assert!(err("tcp://h:80/x").contains("unexpected path"));
        assert!(err("vsock://2").starts_with("missing port"));
        assert!(err("vsock://2:").starts_with("missing port"));
        assert!(err("vsock://2:x").starts_with("bad vsock port"));
        assert!(err("vsock://2:4294967296").starts_with("bad vsock port"));
        assert!(err("vsock://x:1").starts_with("bad vsock CID"));
        assert!(err("/tmp/sock").starts_with("missing scheme"));
        assert!(err("stdio:/bin/x").contains("stdio"));
        for bad in [
            "foo://x",
            "tcp://a",
            "unix://",
            "vsock://q:1",
            "x",
            "tcp://a\nb:1",
        ] {
            let e = err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
