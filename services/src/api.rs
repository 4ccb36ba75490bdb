//! The HTTP control API, with upstream gvproxy's paths and JSON shapes
//! (pkg/virtualnetwork/mux.go), served by small blocking threads.
//!
//! ```text
//!  -listen endpoint   ─┐                        ┌─ /stats /cam /leases /services/dhcp/leases
//!  -services endpoint ─┼─▶ serve_connection ──▶ ├─ /services/dns/{all,add}
//!  gateway:80 (VM)    ─┘   (one request,        ├─ /services/forwarder/{all,expose,unexpose}
//!                           then close)         └─ /connect, /tunnel: the socket is handed over
//! ```
//!
//! The request head is read by our own parser rather than an HTTP library because
//! `/connect` answers nothing and `/tunnel` answers exactly `OK` before the socket turns
//! into a raw stream, and the bytes a client sent right after the head must not be lost.
//! Errors are JSON objects `{"error": "..."}` with a 4xx status (upstream answers
//! plain text); unknown paths are 404.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use transports::http::{read_request_head, RequestHead, VNET_CONNECT_OK, VNET_CONNECT_PATH};

/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 1 << 20;

/// Which paths an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `-listen`: everything, `/connect` included.
    Listen,
    /// `-services`: everything but `/connect`.
    Services,
    /// gateway:80 inside the virtual network: only the forwarder paths; `guest` is the
    /// caller, which an empty host in `remote` stands for.
    InVm { guest: Ipv4Addr },
}

/// A port forward, as upstream's JSON has it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    #[serde(default)]
    pub local: String,
    #[serde(default)]
    pub remote: String,
    #[serde(default)]
    pub protocol: String,
}

/// An API error: a status and a message for the JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: 409,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            message: message.into(),
        }
    }
}

/// What the API reads and changes. gvproxy implements it over its threads' channels.
pub trait Backend: Send + Sync {
    fn stats(&self) -> Result<Value, ApiError>;
    fn cam(&self) -> Result<Value, ApiError>;
    fn leases(&self) -> Result<Value, ApiError>;
    fn dns_zones(&self) -> Result<Value, ApiError>;
    fn dns_add(&self, zone: Value) -> Result<(), ApiError>;
    fn forwards(&self) -> Result<Vec<Forward>, ApiError>;
    fn expose(&self, forward: Forward) -> Result<(), ApiError>;
    fn unexpose(&self, forward: Forward) -> Result<(), ApiError>;
    /// `/connect`: the socket becomes a VM link; `leftover` are bytes read past the head.
    /// `vnet`: `/connect-vnet`, records of virtio-net header + frame (`200 OK` was written).
    fn connect(&self, socket: OwnedFd, leftover: Vec<u8>, vnet: bool);
    /// `/tunnel`: `OK` was written; the socket becomes a raw stream to ip:port in the
    /// virtual network; `leftover` goes first.
    fn tunnel(&self, socket: OwnedFd, leftover: Vec<u8>, ip: Ipv4Addr, port: u16);
}

/// A socket the API can read, write, time out and give away.
pub trait ApiSocket: Read + Write {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn into_fd(self) -> OwnedFd;
}

impl ApiSocket for socket2::Socket {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn into_fd(self) -> OwnedFd {
        self.into()
    }
}

impl ApiSocket for std::os::unix::net::UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn into_fd(self) -> OwnedFd {
        self.into()
    }
}

/// Serves one request on `sock`, then closes it (or hands it over for `/connect` and
/// `/tunnel`).
pub fn serve_connection<S: ApiSocket>(mut sock: S, endpoint: Endpoint, backend: &dyn Backend) {
    let _ = sock.set_timeout(Some(REQUEST_TIMEOUT));
    let (head, mut leftover) = match read_request_head(&mut sock, MAX_HEAD_BYTES) {
        Ok(x) => x,
        Err(e) => {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                let _ = respond_error(
                    &mut sock,
                    &ApiError::bad_request(format!("bad request: {e}")),
                );
            }
            return;
        }
    };
    let path = head.path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let allowed = match endpoint {
        Endpoint::Listen => true,
        Endpoint::Services => path != "/connect" && path != VNET_CONNECT_PATH,
        Endpoint::InVm { .. } => path.starts_with("/services/forwarder/"),
    };
    if !allowed {
        let _ = respond_error(&mut sock, &not_found(&head));
        return;
    }
    match path {
        "/connect" => {
            let _ = sock.set_timeout(None);
            backend.connect(sock.into_fd(), leftover, false);
        }
        VNET_CONNECT_PATH => {
            if sock
                .write_all(VNET_CONNECT_OK)
                .and_then(|()| sock.flush())
                .is_ok()
            {
                let _ = sock.set_timeout(None);
                backend.connect(sock.into_fd(), leftover, true);
            }
        }
        "/tunnel" => match tunnel_target(&head.query) {
            Ok((ip, port)) => {
                if sock.write_all(b"OK").and_then(|()| sock.flush()).is_ok() {
                    let _ = sock.set_timeout(None);
                    backend.tunnel(sock.into_fd(), leftover, ip, port);
                }
            }
            Err(e) => {
                let _ = respond_error(&mut sock, &e);
            }
        },
        _ => {
            let body = match read_body(&mut sock, &head, &mut leftover) {
                Ok(b) => b,
                Err(e) => {
                    let _ = respond_error(&mut sock, &e);
                    return;
                }
            };
            let result = route(path, &head, &body, endpoint, backend);
            let _ = match result {
                Ok(Some(body)) => respond(&mut sock, 200, &body),
                Ok(None) => respond(&mut sock, 200, ""),
                Err(e) => respond_error(&mut sock, &e),
            };
        }
    }
}

fn route(
    path: &str,
    head: &RequestHead,
    body: &[u8],
    endpoint: Endpoint,
    backend: &dyn Backend,
) -> Result<Option<String>, ApiError> {
    let text = |v: Value| Some(v.to_string());
    match path {
        "/stats" => backend.stats().map(text),
        "/cam" => backend.cam().map(text),
        "/leases" | "/services/dhcp/leases" => backend.leases().map(text),
        "/services/dns/all" => backend.dns_zones().map(text),
        "/services/dns/add" => {
            post_only(head)?;
            let zone: Value = parse_json(body)?;
            if !zone.is_object() {
                return Err(ApiError::bad_request("a zone must be a JSON object"));
            }
            backend.dns_add(zone).map(|()| None)
        }
        "/services/forwarder/all" => {
            let mut all = backend.forwards()?;
            all.sort_by(|a, b| (&a.local, &a.protocol).cmp(&(&b.local, &b.protocol)));
            // Serialized from the struct, so the fields keep upstream's order.
            serde_json::to_string(&all)
                .map(Some)
                .map_err(|e| ApiError::unavailable(e.to_string()))
        }
        "/services/forwarder/expose" => {
            post_only(head)?;
            let mut f: Forward = parse_json(body)?;
            normalize(&mut f, endpoint)?;
            backend.expose(f).map(|()| None)
        }
        "/services/forwarder/unexpose" => {
            post_only(head)?;
            let mut f: Forward = parse_json(body)?;
            if f.protocol.is_empty() {
                f.protocol = "tcp".into();
            }
            check_protocol(&f.protocol)?;
            if f.local.is_empty() {
                return Err(ApiError::bad_request("missing \"local\""));
            }
            backend.unexpose(f).map(|()| None)
        }
        _ => Err(not_found(head)),
    }
}

fn not_found(head: &RequestHead) -> ApiError {
    ApiError::not_found(format!("{} {}: no such endpoint", head.method, head.path))
}

fn post_only(head: &RequestHead) -> Result<(), ApiError> {
    if head.method == "POST" {
        Ok(())
    } else {
        Err(ApiError {
            status: 405,
            message: "post only".into(),
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

fn check_protocol(p: &str) -> Result<(), ApiError> {
    match p {
        "tcp" | "udp" | "unix" => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "unknown protocol {p:?} (expected tcp, udp or unix)"
        ))),
    }
}

/// Fills defaults and validates a forward before it reaches the backend.
fn normalize(f: &mut Forward, endpoint: Endpoint) -> Result<(), ApiError> {
    if f.protocol.is_empty() {
        f.protocol = "tcp".into();
    }
    check_protocol(&f.protocol)?;
    if f.local.is_empty() {
        return Err(ApiError::bad_request("missing \"local\""));
    }
    if f.remote.is_empty() {
        return Err(ApiError::bad_request("missing \"remote\""));
    }
    let remote = if f.protocol == "unix" {
        f.remote
            .strip_prefix("tcp://")
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bad remote {:?}: a unix forward goes to tcp://IP:PORT",
                    f.remote
                ))
            })?
            .to_string()
    } else {
        f.remote.clone()
    };
    let (host, port) = remote.rsplit_once(':').ok_or_else(|| {
        ApiError::bad_request(format!("bad remote {:?}: expected IP:PORT", f.remote))
    })?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request(format!("bad port in remote {:?}", f.remote)))?;
    let ip: Ipv4Addr = if host.is_empty() {
        // Upstream: an empty host is the caller — from inside the VM, the guest itself.
        match endpoint {
            Endpoint::InVm { guest } => guest,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "bad remote {:?}: an IP is needed outside the VM",
                    f.remote
                )))
            }
        }
    } else {
        host.parse()
            .map_err(|_| ApiError::bad_request(format!("bad IP in remote {:?}", f.remote)))?
    };
    f.remote = if f.protocol == "unix" {
        format!("tcp://{ip}:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Ok(())
}

/// `ip=` and `port=` of a `/tunnel` query.
fn tunnel_target(query: &str) -> Result<(Ipv4Addr, u16), ApiError> {
    let mut ip = None;
    let mut port = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("ip", v)) => ip = Some(v),
            Some(("port", v)) => port = Some(v),
            _ => {}
        }
    }
    let ip: Ipv4Addr = ip
        .ok_or_else(|| ApiError::bad_request("missing ip"))?
        .parse()
        .map_err(|_| ApiError::bad_request("bad ip"))?;
    let port: u16 = port
        .ok_or_else(|| ApiError::bad_request("missing port"))?
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request("bad port"))?;
    Ok((ip, port))
}

fn read_body(
    sock: &mut impl Read,
    head: &RequestHead,
    leftover: &mut Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    if head
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError {
            status: 411,
            message: "send the body with a Content-Length".into(),
        });
    }
    let len = head.content_length.unwrap_or(0);
    if len > MAX_BODY_BYTES {
        return Err(ApiError {
            status: 413,
            message: format!("body over {MAX_BODY_BYTES} bytes"),
        });
    }
    let mut body = std::mem::take(leftover);
    body.truncate(len);
    let have = body.len();
    body.resize(len, 0);
    sock.read_exact(&mut body[have..])
        .map_err(|e| ApiError::bad_request(format!("short body: {e}")))?;
    Ok(body)
}

fn respond(w: &mut impl Write, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\n{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn respond_error(w: &mut impl Write, e: &ApiError) -> io::Result<()> {
    respond(
        w,
        e.status,
        &serde_json::json!({ "error": e.message }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        exposed: Mutex<Vec<Forward>>,
        connected: Mutex<Vec<Vec<u8>>>,
        vnet: Mutex<Vec<bool>>,
        tunnels: Mutex<Vec<(Ipv4Addr, u16, Vec<u8>)>>,
    }

    impl Backend for Fake {
        fn stats(&self) -> Result<Value, ApiError> {
            Ok(serde_json::json!({"BytesSent": 1, "BytesReceived": 2}))
        }
        fn cam(&self) -> Result<Value, ApiError> {
            Ok(serde_json::json!({}))
        }
        fn leases(&self) -> Result<Value, ApiError> {
            Ok(serde_json::json!({"192.168.127.1": "5a:94:ef:e4:0c:dd"}))
        }
        fn dns_zones(&self) -> Result<Value, ApiError> {
            Ok(serde_json::json!([]))
        }
        fn dns_add(&self, _zone: Value) -> Result<(), ApiError> {
            Ok(())
        }
        fn forwards(&self) -> Result<Vec<Forward>, ApiError> {
            Ok(self.exposed.lock().unwrap().clone())
        }
        fn expose(&self, f: Forward) -> Result<(), ApiError> {
            let mut all = self.exposed.lock().unwrap();
            if all
                .iter()
                .any(|x| x.local == f.local && x.protocol == f.protocol)
            {
                return Err(ApiError::conflict(format!(
                    "proxy already running for {} on {}",
                    f.protocol, f.local
                )));
            }
            all.push(f);
            Ok(())
        }
        fn unexpose(&self, f: Forward) -> Result<(), ApiError> {
            let mut all = self.exposed.lock().unwrap();
            let before = all.len();
            all.retain(|x| !(x.local == f.local && x.protocol == f.protocol));
            if all.len() == before {
                return Err(ApiError::not_found("proxy not found"));
            }
            Ok(())
        }
        fn connect(&self, _socket: OwnedFd, leftover: Vec<u8>, vnet: bool) {
            self.connected.lock().unwrap().push(leftover);
            self.vnet.lock().unwrap().push(vnet);
        }
        fn tunnel(&self, _socket: OwnedFd, leftover: Vec<u8>, ip: Ipv4Addr, port: u16) {
            self.tunnels.lock().unwrap().push((ip, port, leftover));
        }
    }

    fn call(fake: &Fake, endpoint: Endpoint, request: &[u8]) -> String {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(request).unwrap();
        serve_connection(server, endpoint, fake);
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn post(path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn expose_all_unexpose_round_trip() {
        let f = Fake::default();
        let r = call(
            &f,
            Endpoint::Listen,
            &post(
                "/services/forwarder/expose",
                r#"{"local":"127.0.0.1:9090","remote":"192.168.127.2:8080"}"#,
            ),
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = call(
            &f,
            Endpoint::Listen,
            &post(
                "/services/forwarder/expose",
                r#"{"local":"127.0.0.1:9090","remote":"192.168.127.2:8080"}"#,
            ),
        );
        assert!(r.starts_with("HTTP/1.1 409"), "{r}");
        assert!(
            r.contains("proxy already running for tcp on 127.0.0.1:9090"),
            "{r}"
        );
        let r = call(
            &f,
            Endpoint::Services,
            b"GET /services/forwarder/all HTTP/1.1\r\n\r\n",
        );
        assert!(
            r.ends_with(
                r#"[{"local":"127.0.0.1:9090","remote":"192.168.127.2:8080","protocol":"tcp"}]"#
            ),
            "{r}"
        );
        let r = call(
            &f,
            Endpoint::Listen,
            &post(
                "/services/forwarder/unexpose",
                r#"{"local":"127.0.0.1:9090"}"#,
            ),
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    #[test]
    fn in_vm_empty_host_is_the_caller_and_only_forwarder_paths() {
        let f = Fake::default();
        let guest = Ipv4Addr::new(192, 168, 127, 3);
        let r = call(
            &f,
            Endpoint::InVm { guest },
            &post(
                "/services/forwarder/expose",
                r#"{"local":":9091","remote":":8080"}"#,
            ),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(f.exposed.lock().unwrap()[0].remote, "192.168.127.3:8080");
        let r = call(&f, Endpoint::InVm { guest }, b"GET /stats HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = call(&f, Endpoint::Services, b"POST /connect HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    }

    #[test]
    fn bad_input_gets_4xx_json() {
        let f = Fake::default();
        for (req, status) in [
            (post("/services/forwarder/expose", "{nope"), "400"),
            (
                post(
                    "/services/forwarder/expose",
                    r#"{"local":":1","remote":"1.2.3.4:5","protocol":"sctp"}"#,
                ),
                "400",
            ),
            (
                post(
                    "/services/forwarder/expose",
                    r#"{"local":":1","remote":"nohost:5"}"#,
                ),
                "400",
            ),
            (
                post(
                    "/services/forwarder/expose",
                    r#"{"local":":1","remote":":5"}"#,
                ),
                "400",
            ),
            (
                b"GET /services/forwarder/expose HTTP/1.1\r\n\r\n".to_vec(),
                "405",
            ),
            (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), "404"),
            (b"GARBAGE\r\n\r\n".to_vec(), "400"),
            (
                b"POST /tunnel?ip=1.2.3&port=22 HTTP/1.1\r\n\r\n".to_vec(),
                "400",
            ),
            (
                b"POST /tunnel?ip=192.168.127.2&port=0 HTTP/1.1\r\n\r\n".to_vec(),
                "400",
            ),
            (b"POST /tunnel?port=22 HTTP/1.1\r\n\r\n".to_vec(), "400"),
        ] {
            let r = call(&f, Endpoint::Listen, &req);
            assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
            assert!(r.contains("{\"error\":"), "{r}");
        }
    }

    #[test]
    fn connect_and_tunnel_hand_over_with_leftover() {
        let f = Fake::default();
        let mut req = transports::http::GO_CONNECT_REQUEST.to_vec();
        req.extend_from_slice(&[4, 0, 1, 2, 3, 4]);
        let r = call(&f, Endpoint::Listen, &req);
        assert_eq!(r, "", "/connect must answer nothing");
        assert_eq!(f.connected.lock().unwrap()[0], [4, 0, 1, 2, 3, 4]);
        // Our extension answers 200 first; -services has neither.
        let r = call(
            &f,
            Endpoint::Listen,
            b"POST /connect-vnet HTTP/1.1\r\n\r\n\x00\x00",
        );
        assert_eq!(r.as_bytes(), transports::http::VNET_CONNECT_OK);
        assert_eq!(f.connected.lock().unwrap()[1], [0, 0]);
        assert_eq!(*f.vnet.lock().unwrap(), [false, true]);
        let r = call(
            &f,
            Endpoint::Services,
            b"POST /connect-vnet HTTP/1.1\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = call(
            &f,
            Endpoint::Services,
            b"POST /tunnel?ip=192.168.127.2&port=22 HTTP/1.1\r\n\r\nSSH-2.0",
        );
        assert_eq!(r, "OK");
        assert_eq!(
            f.tunnels.lock().unwrap()[0],
            (Ipv4Addr::new(192, 168, 127, 2), 22, b"SSH-2.0".to_vec())
        );
    }
}
