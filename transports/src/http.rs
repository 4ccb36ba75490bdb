//! The HTTP/1.1 request head before a hijacked stream (`POST /connect`, `/tunnel`).
//!
//! gvforwarder writes Go's `Request.Write` of a bodyless POST and starts sending frames right
//! after it; the server answers nothing. So the head reader must hand back every byte it read
//! past `\r\n\r\n`.

use std::io::{self, Read};

/// What Go's `http.Request.Write` produces for `POST /connect` with no body.
pub const GO_CONNECT_REQUEST: &[u8] =
    b"POST /connect HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\n\r\n";

/// A sensible `max_head` for `read_request_head`.
pub const DEFAULT_MAX_HEAD: usize = 8 * 1024;

const MAX_HEADERS: usize = 100;

/// [`GO_CONNECT_REQUEST`] with another path (a missing leading `/` is added).
pub fn connect_request(path: &str) -> Vec<u8> {
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!(
        "POST {slash}{path} HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A parsed request line and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (`/connect`, `/tunnel?ip=..&port=..`).
    pub target: String,
    /// Target without the query (absolute-form targets reduced to their path).
    pub path: String,
    /// The part after `?`, without it; empty if none.
    pub query: String,
    /// Header names and values as received (values trimmed); look up with [`RequestHead::header`].
    pub headers: Vec<(String, String)>,
    pub content_length: Option<usize>,
}

impl RequestHead {
    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a head (request line and headers, with or without the final blank line).
    pub fn parse(head: &[u8]) -> io::Result<RequestHead> {
        let text = std::str::from_utf8(head).map_err(|_| invalid("request head is not UTF-8"))?;
        let text = text.strip_suffix("\r\n\r\n").unwrap_or(text);
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
        let text = text.trim_start_matches("\r\n");
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or("");
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("malformed request line"));
        };
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(invalid("bad method in request line"));
        }
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("bad request target"));
        }
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(invalid("unsupported HTTP version"));
        }
        let (path, query) = split_target(target)?;
        let mut headers = Vec::new();
        let mut content_length = None;
        for line in lines {
            if headers.len() >= MAX_HEADERS {
                return Err(invalid("too many header lines"));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid("header line without ':'"));
            };
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(invalid("bad header name"));
            }
            let value = value.trim_matches(|c| c == ' ' || c == '\t');
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(invalid("control character in header value"));
            }
            if name.eq_ignore_ascii_case("content-length") {
                let len = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse::<usize>().ok()
                } else {
                    None
                }
                .ok_or_else(|| invalid("bad Content-Length"))?;
                if content_length.is_some_and(|l| l != len) {
                    return Err(invalid("conflicting Content-Length headers"));
                }
                content_length = Some(len);
            }
            headers.push((name.to_string(), value.to_string()));
        }
        Ok(RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            path,
            query,
            headers,
            content_length,
        })
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP request: {msg}"),
    )
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn split_target(target: &str) -> io::Result<(String, String)> {
    let (before, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let path = if before.starts_with('/') || before == "*" {
        before
    } else if let Some((_, rest)) = before.split_once("://") {
        // absolute-form: http://host/path
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        }
    } else {
        return Err(invalid(
            "request target is neither a path nor an absolute URL",
        ));
    };
    Ok((path.to_string(), query.to_string()))
}

/// Our extension of `/connect`: frames travel as records of a virtio-net header and the
/// frame behind a u32 big-endian length, so TSO segments cross the link. gvproxy answers
/// `200 OK` ([`VNET_CONNECT_OK`]) before the records; upstream answers 404, and the client
/// falls back to `/connect`.
pub const VNET_CONNECT_PATH: &str = "/connect-vnet";
pub const VNET_CONNECT_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Reads an HTTP response head (client side of `/connect-vnet`): the status code and every
/// byte read after the head.
pub fn read_response_head(r: &mut impl Read, max_head: usize) -> io::Result<(u16, Vec<u8>)> {
    let (head, leftover) = read_head(r, max_head)?;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    let status = status.ok_or_else(|| invalid(&format!("bad status line {line:?}")))?;
    Ok((status, leftover))
}

/// Reads from a blocking stream until `\r\n\r\n` (within `max_head` bytes, else InvalidData).
/// Returns the head and every byte read after it (frames may follow at once).
pub fn read_request_head(r: &mut impl Read, max_head: usize) -> io::Result<(RequestHead, Vec<u8>)> {
    let (head, leftover) = read_head(r, max_head)?;
    Ok((RequestHead::parse(&head)?, leftover))
}

fn read_head(r: &mut impl Read, max_head: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::with_capacity(max_head.min(64 * 1024) + 4096);
    let mut chunk = [0u8; 4096];
    let mut scanned: usize = 0;
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the HTTP head",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        let from = scanned.saturating_sub(3);
        if let Some(i) = find_crlfcrlf(&buf[from..]) {
            let end = from + i + 4;
            if end > max_head {
                break;
            }
            let leftover = buf.split_off(end);
            return Ok((buf, leftover));
        }
        scanned = buf.len();
        if scanned >= max_head {
            break;
        }
    }
    Err(invalid(&format!("HTTP head longer than {max_head} bytes")))
}

fn find_crlfcrlf(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x00\x00\x00\x10rest";
        let (status, left) = read_response_head(&mut r, 4096).unwrap();
        assert_eq!((status, &left[..]), (200, &b"\x00\x00\x00\x10rest"[..]));
        let mut r: &[u8] =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n";
        assert_eq!(read_response_head(&mut r, 4096).unwrap().0, 404);
        let mut r: &[u8] = b"SSH-2.0\r\n\r\n";
        assert!(read_response_head(&mut r, 4096).is_err());
        let mut r: &[u8] = VNET_CONNECT_OK;
        assert_eq!(read_response_head(&mut r, 4096).unwrap(), (200, vec![]));
    }
    use crate::framing::{encode_frame, Framing};

    /// A reader that hands out at most `step` bytes per read, with an EINTR in between.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn go_request_bytes() {
        assert_eq!(connect_request("/connect"), GO_CONNECT_REQUEST);
        assert_eq!(connect_request("connect"), GO_CONNECT_REQUEST);
        assert!(connect_request("/tunnel?ip=1.2.3.4&port=22")
            .starts_with(b"POST /tunnel?ip=1.2.3.4&port=22 HTTP/1.1\r\n"));
    }

    #[test]
    fn parses_go_request_and_keeps_leftover() {
        let mut wire = GO_CONNECT_REQUEST.to_vec();
        let mut frames = Vec::new();
        encode_frame(Framing::LenU16Le, &[0x11; 60], &mut frames);
        encode_frame(Framing::LenU16Le, &[0x22; 1514], &mut frames);
        wire.extend_from_slice(&frames);
        for step in [1, 5, 64, 4096] {
            let mut r = Trickle {
                data: &wire,
                step,
                interrupt: false,
            };
            let (head, rest) = read_request_head(&mut r, DEFAULT_MAX_HEAD).unwrap();
            // The reader may stop early; what it did not read is still in `r`.
            let mut all = rest.clone();
            all.extend_from_slice(r.data);
            assert_eq!(all, frames, "step {step}");
            assert_eq!(head.method, "POST");
            assert_eq!(head.path, "/connect");
            assert_eq!(head.query, "");
            assert_eq!(head.header("host"), Some(""));
            assert_eq!(head.header("USER-AGENT"), Some("Go-http-client/1.1"));
            assert_eq!(head.content_length, Some(0));
        }
    }

    #[test]
    fn target_forms() {
        let h = RequestHead::parse(b"GET /tunnel?ip=1.2.3.4&port=22 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(
            (h.path.as_str(), h.query.as_str()),
            ("/tunnel", "ip=1.2.3.4&port=22")
        );
        let h = RequestHead::parse(b"POST http://x/connect HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\n")
            .unwrap();
        assert_eq!(h.path, "/connect");
        assert_eq!(h.content_length, Some(5));
        let h = RequestHead::parse(b"\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.target, "/");
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET relative HTTP/1.1\r\n\r\n",
        ] {
            let e = read_request_head(&mut &bad[..], DEFAULT_MAX_HEAD).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidData,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn head_size_limit_and_eof() {
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', 10_000));
        let e = read_request_head(&mut &long[..], 8192).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(100 - 4, b'b');
        exact.extend_from_slice(b"\r\n\r\n");
        assert!(read_request_head(&mut &exact[..], 100).is_ok());
        assert!(read_request_head(&mut &exact[..], 99).is_err());
        let e = read_request_head(&mut &b"GET / HTTP/1.1\r\n"[..], 8192).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
