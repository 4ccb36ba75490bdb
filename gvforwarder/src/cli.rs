//! The command line: upstream gvforwarder's flags and defaults (cmd/vm/main_linux.go), plus
//! `-protocol`, `-uuid`, `-local` and `-vfkt`, so that one program can stand in for any VM NIC.
//! Validated into a [`Config`]; a bad value is one [`ConfigError`] line naming the flag, which
//! `main` prints before exiting with 2.

use std::fmt;
use std::path::PathBuf;

use transports::goflag::{Flags, Kind, Spec};
use transports::Endpoint;

pub const DEFAULT_URL: &str = "vsock://2:1024/connect";
pub const DEFAULT_MAC: &str = "5a:94:ef:e4:0c:ee";
/// HyperKit's default UUID; upstream gvproxy maps it to the first guest's MAC.
pub const DEFAULT_UUID: &str = "c3d68012-0208-11ea-9fd7-f2189899ab08";
/// HTTP path of the hijacked frame stream on gvproxy's `-listen` endpoints.
pub const CONNECT_PATH: &str = "/connect";
/// Smallest MTU that IPv4 allows; the largest is what a u16 length prefix can carry.
pub const MIN_MTU: usize = 68;
pub const MAX_MTU: usize = 65535 - ETHERNET_HEADER_BYTES;
pub const ETHERNET_HEADER_BYTES: usize = 14;

pub const SPECS: &[Spec] = &[
    Spec::value(
        "url",
        DEFAULT_URL,
        "url where the tap send packets: vsock://CID:PORT/path, unix:///path, tcp://host:port, \
         unixpacket:///path, unixgram:///path or stdio:/path/to/exe?flag=value&...",
    ),
    Spec::value("iface", "tap0", "tap interface name"),
    Spec::value(
        "stop-if-exist",
        "eth0,ens3,enp0s1",
        "stop if one of these interfaces exists at startup (empty: never)",
    ),
    Spec::value(
        "mac",
        DEFAULT_MAC,
        "mac address (empty: keep the TAP's own)",
    ),
    Spec::bool("debug", "debug"),
    Spec::value(
        "mtu",
        "4000",
        "mtu: sizes the frame buffers (larger frames from the host are dropped)",
    ),
    Spec::bool("preexisting", "use preexisting/preconfigured TAP interface"),
    Spec::bool(
        "no-vnet",
        "connect: do not ask gvproxy for /connect-vnet (virtio-net headers, TSO); plain /connect",
    ),
    Spec::bool("version", "print version and exit"),
    Spec::value(
        "protocol",
        "",
        "framing on the link: connect, hyperkit, stdio (or u16), qemu, bess, vfkit \
         (default: connect for unix:// and vsock:// with a path, stdio for stdio: and vsock:// \
         without one, qemu for tcp://, bess for unixpacket://, vfkit for unixgram://)",
    ),
    Spec::value("uuid", DEFAULT_UUID, "hyperkit: UUID sent in the handshake"),
    Spec::value(
        "local",
        "",
        "vfkit: local unixgram socket to bind (default /tmp/gvforwarder-<pid>.sock)",
    ),
    Spec {
        name: "vfkt",
        kind: Kind::Bool,
        default: "true",
        help: "vfkit: send the VFKT greeting first (default true; -vfkt=false: don't)",
    },
];

/// How frames travel on the link to gvproxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP `POST <path>` (no response is read), then u16 LE length + frame.
    Connect(String),
    /// HyperKit's VMN3T handshake with this UUID, then u16 LE length + frame.
    Hyperkit(String),
    /// u16 LE length + frame from the first byte (upstream's stdio and path-less vsock).
    U16,
    /// u32 BE length + frame (QEMU's stream netdev).
    Qemu,
    /// One SOCK_SEQPACKET message per frame (User Mode Linux's bess).
    Bess,
    /// One datagram per frame on a connected unixgram socket (vfkit, libkrun).
    Vfkit { local: PathBuf, send_vfkt: bool },
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Connect(path) => write!(f, "connect (POST {path}, u16 LE)"),
            Protocol::Hyperkit(_) => write!(f, "hyperkit (u16 LE)"),
            Protocol::U16 => write!(f, "u16 LE"),
            Protocol::Qemu => write!(f, "qemu (u32 BE)"),
            Protocol::Bess => write!(f, "bess (seqpacket)"),
            Protocol::Vfkit { .. } => write!(f, "vfkit (unixgram)"),
        }
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dial {
    /// unix://, tcp:// or vsock:// (with a CID) stream.
    Stream(Endpoint),
    /// `stdio:` URL: spawn `program args...`, frames on its stdin/stdout.
    Exec { program: String, args: Vec<String> },
    /// unixpacket:// path.
    Seqpacket(PathBuf),
    /// unixgram:// path of the peer.
    Unixgram(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The `-url` value as given, for log lines.
    pub url: String,
    pub dial: Dial,
    pub protocol: Protocol,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub iface: String,
    pub stop_if_exist: Vec<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: usize,
    pub preexisting: bool,
    pub debug: bool,
    /// Offer gvproxy the virtio-net header extension (`POST /connect-vnet`) first.
    pub vnet: bool,
}

/// A bad command line: the flag and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for -{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn bad(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

fn value<'a>(flags: &'a Flags, name: &str) -> &'a str {
    let default = SPECS
        .iter()
        .find(|s| s.name == name)
        .map_or("", |s| s.default);
    flags.get_or(name, default)
}

impl Config {
    pub fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
        if let Some(extra) = flags.rest.first() {
            return Err(ConfigError {
                flag: "url",
                message: format!("unexpected argument {extra:?} (flags only)"),
            });
        }
        let iface = value(flags, "iface").to_string();
        check_iface_name(&iface).map_err(|m| bad("iface", m))?;
        let stop_if_exist = value(flags, "stop-if-exist")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mac = match value(flags, "mac") {
            "" => None,
            s => Some(parse_mac(s).map_err(|m| bad("mac", m))?),
        };
        let mtu_text = value(flags, "mtu");
        let mtu = mtu_text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
            .ok_or_else(|| {
                bad(
                    "mtu",
                    format!("{mtu_text:?} is not a number between {MIN_MTU} and {MAX_MTU}"),
                )
            })?;
        let options = ProtocolOptions {
            protocol: value(flags, "protocol"),
            uuid: value(flags, "uuid"),
            local: value(flags, "local"),
            send_vfkt: flags.get("vfkt").is_none_or(|v| v == "true"),
        };
        let target = parse_target(value(flags, "url"), &options)?;
        Ok(Config {
            target,
            iface,
            stop_if_exist,
            mac,
            mtu,
            preexisting: flags.bool("preexisting"),
            debug: flags.bool("debug"),
            vnet: !flags.bool("no-vnet"),
        })
    }
}

/// The protocol-related flags, before they are checked against the URL.
#[derive(Clone, Copy, Debug)]
pub struct ProtocolOptions<'a> {
    pub protocol: &'a str,
    pub uuid: &'a str,
    pub local: &'a str,
    pub send_vfkt: bool,
}

impl Default for ProtocolOptions<'_> {
    fn default() -> Self {
        ProtocolOptions {
            protocol: "",
            uuid: DEFAULT_UUID,
            local: "",
            send_vfkt: true,
        }
    }
}

/// `-protocol` values, before the URL gives them their parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProtocolName {
    Connect,
    Hyperkit,
    U16,
    Qemu,
    Bess,
    Vfkit,
}

fn protocol_name(s: &str) -> Result<ProtocolName, ConfigError> {
    Ok(match s {
        "connect" => ProtocolName::Connect,
        "hyperkit" | "vpnkit" => ProtocolName::Hyperkit,
        "stdio" | "u16" => ProtocolName::U16,
        "qemu" => ProtocolName::Qemu,
        "bess" => ProtocolName::Bess,
        "vfkit" => ProtocolName::Vfkit,
        other => {
            return Err(bad(
                "protocol",
                format!(
                    "unknown protocol {other:?} (expected connect, hyperkit, stdio, u16, qemu, \
                     bess or vfkit)"
                ),
            ))
        }
    })
}

/// Resolves `-url` and the protocol flags into what to dial and how to frame.
pub fn parse_target(url: &str, options: &ProtocolOptions<'_>) -> Result<Target, ConfigError> {
    let requested = match options.protocol {
        "" => None,
        p => Some(protocol_name(p)?),
    };
    let (dial, default, http_path) = if let Some(rest) = url.strip_prefix("stdio:") {
        let (program, args) = parse_stdio(rest).map_err(|m| bad("url", m))?;
        (Dial::Exec { program, args }, ProtocolName::U16, None)
    } else {
        let endpoint: Endpoint = url.parse().map_err(|e| bad("url", format!("{e}")))?;
        match endpoint {
            Endpoint::Unix(_) => (
                Dial::Stream(endpoint),
                ProtocolName::Connect,
                Some(CONNECT_PATH.to_string()),
            ),
            // An empty host dials 127.0.0.1.
            Endpoint::Tcp(_) => (
                Dial::Stream(endpoint),
                ProtocolName::Qemu,
                Some(CONNECT_PATH.to_string()),
            ),
            Endpoint::Vsock { cid, ref path, .. } => {
                if cid.is_none() {
                    return Err(bad(
                        "url",
                        format!("missing CID in {url:?} (the host is vsock://2:PORT)"),
                    ));
                }
                let (default, http_path) = if path.is_empty() {
                    (ProtocolName::U16, None)
                } else {
                    (ProtocolName::Connect, Some(path.clone()))
                };
                (Dial::Stream(endpoint), default, http_path)
            }
            Endpoint::Unixpacket(path) => (Dial::Seqpacket(path), ProtocolName::Bess, None),
            Endpoint::Unixgram(path) => (Dial::Unixgram(path), ProtocolName::Vfkit, None),
            Endpoint::Stdio => {
                return Err(bad(
                    "url",
                    format!(
                    "{url:?}: a stdio URL names the program to run: stdio:/path/to/exe?flag=value"
                ),
                ))
            }
        }
    };
    let name = requested.unwrap_or(default);
    let scheme = url.split(':').next().unwrap_or_default();
    let stream = matches!(dial, Dial::Stream(_) | Dial::Exec { .. });
    let protocol = match name {
        ProtocolName::Connect if matches!(dial, Dial::Stream(_)) => {
            Protocol::Connect(http_path.unwrap_or_else(|| CONNECT_PATH.to_string()))
        }
        ProtocolName::Hyperkit if stream => {
            check_uuid(options.uuid).map_err(|m| bad("uuid", m))?;
            Protocol::Hyperkit(options.uuid.to_string())
        }
        ProtocolName::U16 if stream => Protocol::U16,
        ProtocolName::Qemu if stream => Protocol::Qemu,
        ProtocolName::Bess if matches!(dial, Dial::Seqpacket(_)) => Protocol::Bess,
        ProtocolName::Vfkit if matches!(dial, Dial::Unixgram(_)) => {
            let local = if options.local.is_empty() {
                PathBuf::from(format!("/tmp/gvforwarder-{}.sock", std::process::id()))
            } else {
                PathBuf::from(options.local)
            };
            Protocol::Vfkit {
                local,
                send_vfkt: options.send_vfkt,
            }
        }
        _ => {
            let expected = match dial {
                Dial::Stream(_) => "connect, hyperkit, stdio, u16 or qemu",
                Dial::Exec { .. } => "hyperkit, stdio, u16 or qemu",
                Dial::Seqpacket(_) => "bess",
                Dial::Unixgram(_) => "vfkit",
            };
            return Err(bad(
                "protocol",
                format!(
                    "{:?} does not work over {scheme}: URLs (expected {expected})",
                    options.protocol
                ),
            ));
        }
    };
    Ok(Target {
        url: url.to_string(),
        dial,
        protocol,
    })
}

/// `stdio:` URL body (after the scheme) to (program, argv): `/path/exe?k=v&k2=v2` gives
/// `/path/exe -k=v -k2=v2`, in the order given (upstream builds the same flags from Go's
/// `url.Values`). `stdio:///path/exe` and `stdio:exe` (looked up in PATH) are accepted too.
pub fn parse_stdio(rest: &str) -> Result<(String, Vec<String>), String> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    let path = match path.strip_prefix("//") {
        // An authority is not a place to run a program from.
        Some(after) => match after.find('/') {
            Some(0) => after,
            _ => {
                return Err(format!(
                    "stdio URL \"stdio:{rest}\" has a host; use stdio:/path/to/exe"
                ))
            }
        },
        None => path,
    };
    let program = percent_decode(path, false)?;
    if program.is_empty() {
        return Err(format!(
            "stdio URL \"stdio:{rest}\" names no program (stdio:/path/to/exe?flag=value)"
        ));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true)?;
        let v = percent_decode(v, true)?;
        if k.is_empty() {
            continue;
        }
        args.push(format!("-{k}={v}"));
    }
    Ok((program, args))
}

/// Go's `url.PathUnescape` / `url.QueryUnescape` (the latter turns `+` into a space).
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Go's `net.ParseMAC` for 6-byte addresses (`aa:bb:..`, `aa-bb-..`, `aabb.ccdd.eeff`);
/// a multicast address cannot be a NIC's address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let err = || format!("{s:?} is not a MAC address (like {DEFAULT_MAC})");
    let groups: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else {
        // Dotted form: three groups of four hex digits.
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 4 || !p.is_ascii()) {
            return Err(err());
        }
        parts
            .iter()
            .flat_map(|p| [p.get(..2).unwrap_or(""), p.get(2..).unwrap_or("")])
            .collect()
    };
    if groups.len() != 6 {
        return Err(err());
    }
    let mut mac = [0u8; 6];
    for (slot, g) in mac.iter_mut().zip(&groups) {
        if g.len() != 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        *slot = u8::from_str_radix(g, 16).map_err(|_| err())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("{s:?} is a multicast address"));
    }
    Ok(mac)
}

fn check_iface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "{name:?}: an interface name has 1 to {} bytes",
            libc::IFNAMSIZ - 1
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// HyperKit sends the UUID as 36 ASCII bytes.
fn check_uuid(uuid: &str) -> Result<(), String> {
    let ok = uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{uuid:?} is not a UUID like {DEFAULT_UUID}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_flags(&Flags::parse(SPECS, args.iter().copied()).unwrap())
    }

    fn target(url: &str, protocol: &str) -> Result<Target, ConfigError> {
        parse_target(
            url,
            &ProtocolOptions {
                protocol,
                ..ProtocolOptions::default()
            },
        )
    }

    #[test]
    fn upstream_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.iface, "tap0");
        assert_eq!(c.mtu, 4000);
        assert_eq!(c.mac, Some([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]));
        assert_eq!(c.stop_if_exist, ["eth0", "ens3", "enp0s1"]);
        assert!(!c.preexisting && !c.debug);
        assert_eq!(c.target.url, DEFAULT_URL);
        assert_eq!(
            c.target.dial,
            Dial::Stream(Endpoint::Vsock {
                cid: Some(2),
                port: 1024,
                path: "/connect".into()
            })
        );
        assert_eq!(c.target.protocol, Protocol::Connect("/connect".into()));
    }

    #[test]
    fn go_style_flags() {
        let c = config(&[
            "--iface=tap9",
            "-mtu",
            "1500",
            "-mac=",
            "-stop-if-exist",
            "",
            "-preexisting",
            "-debug=true",
        ])
        .unwrap();
        assert_eq!(c.iface, "tap9");
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.mac, None);
        assert!(c.stop_if_exist.is_empty());
        assert!(c.preexisting && c.debug);
        let c = config(&["-stop-if-exist", " eth1 ,,wlan0"]).unwrap();
        assert_eq!(c.stop_if_exist, ["eth1", "wlan0"]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["-mtu", "abc"][..], "mtu"),
            (&["-mtu", "67"], "mtu"),
            (&["-mtu", "65522"], "mtu"),
            (&["-mac", "5a:94:ef:e4:0c"], "mac"),
            (&["-mac", "01:00:5e:00:00:01"], "mac"),
            (&["-iface", "a-very-long-name0"], "iface"),
            (&["-iface", ""], "iface"),
            (&["-url", "http://x"], "url"),
            (&["-url", "vsock://:1024/connect"], "url"),
            (&["-protocol", "nope"], "protocol"),
            (&["-protocol", "bess"], "protocol"),
            (&["-url", "unix:///s", "-protocol", "vfkit"], "protocol"),
            (&["-url", "unixgram:///s", "-protocol", "qemu"], "protocol"),
            (&["-url", "stdio:/x", "-protocol", "connect"], "protocol"),
            (
                &["-url", "unix:///s", "-protocol", "hyperkit", "-uuid", "x"],
                "uuid",
            ),
            (&["-url", "stdio:"], "url"),
            (&["-url", "stdio:/bin/x?a=%zz"], "url"),
            (&["extra"], "url"),
        ] {
            let e = config(args).unwrap_err();
            assert_eq!(e.flag, flag, "{args:?}: {e}");
            assert!(e
                .to_string()
                .starts_with(&format!("invalid value for -{flag}: ")));
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn mac_spellings() {
        let want = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
        assert_eq!(parse_mac("5a:94:ef:e4:0c:ee"), Ok(want));
        assert_eq!(parse_mac("5A-94-EF-E4-0C-EE"), Ok(want));
        assert_eq!(parse_mac("5a94.efe4.0cee"), Ok(want));
        assert!(parse_mac("5a:94:ef:e4:0c:e").is_err());
        assert!(parse_mac("5a:94:ef:e4:0c:ee:00").is_err());
        assert!(parse_mac("zz:94:ef:e4:0c:ee").is_err());
        assert!(parse_mac("+a:94:ef:e4:0c:ee").is_err());
    }

    #[test]
    fn default_protocol_follows_the_scheme() {
        let t = target("unix:///run/gv.sock", "").unwrap();
        assert_eq!(t.dial, Dial::Stream(Endpoint::Unix("/run/gv.sock".into())));
        assert_eq!(t.protocol, Protocol::Connect("/connect".into()));

        let t = target("vsock://2:1024/other", "").unwrap();
        assert_eq!(t.protocol, Protocol::Connect("/other".into()));
        let t = target("vsock://2:1024", "").unwrap();
        assert_eq!(t.protocol, Protocol::U16);

        let t = target("tcp://127.0.0.1:5555", "").unwrap();
        assert_eq!(t.dial, Dial::Stream(Endpoint::Tcp("127.0.0.1:5555".into())));
        assert_eq!(t.protocol, Protocol::Qemu);

        let t = target("unixpacket:///tmp/bess.sock", "").unwrap();
        assert_eq!(t.dial, Dial::Seqpacket("/tmp/bess.sock".into()));
        assert_eq!(t.protocol, Protocol::Bess);

        let t = target("unixgram:///tmp/vfkit.sock", "").unwrap();
        assert_eq!(t.dial, Dial::Unixgram("/tmp/vfkit.sock".into()));
        let Protocol::Vfkit { local, send_vfkt } = t.protocol else {
            panic!("not vfkit: {:?}", t.protocol)
        };
        assert!(send_vfkt);
        assert!(local.to_string_lossy().starts_with("/tmp/gvforwarder-"));

        let t = target("stdio:/usr/bin/gvproxy", "").unwrap();
        assert_eq!(t.protocol, Protocol::U16);
    }

    #[test]
    fn protocol_flag_overrides() {
        assert_eq!(
            target("unix:///s", "qemu").unwrap().protocol,
            Protocol::Qemu
        );
        assert_eq!(target("unix:///s", "u16").unwrap().protocol, Protocol::U16);
        assert_eq!(
            target("unix:///s", "stdio").unwrap().protocol,
            Protocol::U16
        );
        assert_eq!(
            target("tcp://localhost:1", "connect").unwrap().protocol,
            Protocol::Connect("/connect".into())
        );
        assert_eq!(
            target("vsock://2:1024", "connect").unwrap().protocol,
            Protocol::Connect("/connect".into())
        );
        assert_eq!(
            target("unix:///s", "hyperkit").unwrap().protocol,
            Protocol::Hyperkit(DEFAULT_UUID.into())
        );
        assert_eq!(
            target("stdio:/bin/peer", "qemu").unwrap().protocol,
            Protocol::Qemu
        );
        let c = config(&[
            "-url",
            "unixgram:///tmp/v.sock",
            "-local",
            "/tmp/me.sock",
            "-vfkt=false",
        ])
        .unwrap();
        assert_eq!(
            c.target.protocol,
            Protocol::Vfkit {
                local: "/tmp/me.sock".into(),
                send_vfkt: false
            }
        );
        let c = config(&[
            "-url=unix:///s",
            "-protocol=hyperkit",
            "-uuid=01234567-89ab-cdef-0123-456789ABCDEF",
        ])
        .unwrap();
        assert_eq!(
            c.target.protocol,
            Protocol::Hyperkit("01234567-89ab-cdef-0123-456789ABCDEF".into())
        );
    }

    #[test]
    fn stdio_url_to_argv() {
        let t = target("stdio:/usr/bin/gvproxy?listen-stdio=accept&debug=true", "").unwrap();
        assert_eq!(
            t.dial,
            Dial::Exec {
                program: "/usr/bin/gvproxy".into(),
                args: vec!["-listen-stdio=accept".into(), "-debug=true".into()],
            }
        );
        assert_eq!(
            parse_stdio("///opt/gv%20proxy?a=b%3Dc&x&&mtu=1500&msg=a+b").unwrap(),
            (
                "/opt/gv proxy".to_string(),
                vec![
                    "-a=b=c".to_string(),
                    "-x=".to_string(),
                    "-mtu=1500".to_string(),
                    "-msg=a b".to_string()
                ]
            )
        );
        assert_eq!(
            parse_stdio("gvproxy").unwrap(),
            ("gvproxy".to_string(), vec![])
        );
        assert!(parse_stdio("//host/exe").is_err());
        assert!(parse_stdio("?a=b").is_err());
        assert!(parse_stdio("/x?a=%4").is_err());
        assert!(parse_stdio("/x%ff").is_err());
    }
}
