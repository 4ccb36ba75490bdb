//! The command line, with upstream gvproxy's flag names and defaults
//! (cmd/gvproxy/config.go), validated into a [`Config`]. A bad value is one
//! [`ConfigError`] line naming the flag; `main` prints it and exits with 2.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use stack::wire::MacAddr;
use transports::endpoint::Endpoint;
use transports::goflag::{Flags, Spec};

pub const SPECS: &[Spec] = &[
    Spec::repeated(
        "listen",
        "control endpoint with /connect (unix://, tcp://, vsock://); repeatable",
    ),
    Spec::value(
        "listen-qemu",
        "",
        "unix:// or tcp:// socket for QEMU's stream netdev",
    ),
    Spec::value(
        "listen-bess",
        "",
        "unixpacket:// socket for User Mode Linux (bess)",
    ),
    Spec::value(
        "listen-vfkit",
        "",
        "unixgram:// socket for vfkit or libkrun",
    ),
    Spec::value("listen-vpnkit", "", "socket for HyperKit's virtio-vpnkit"),
    Spec::value(
        "listen-tap",
        "",
        "serve a TAP device directly: NAME, or NSPATH:NAME in another network namespace (/proc/PID/ns/net:tap0, /run/netns/NAME:tap0); created if missing, given the MTU and brought up, with TSO",
    ),
    Spec::value(
        "listen-stdio",
        "",
        "any value: use stdin/stdout as the VM link",
    ),
    Spec::value("mtu", "1500", "MTU of the virtual network"),
    Spec::value(
        "subnet",
        "192.168.127.0/24",
        "subnet of the virtual network",
    ),
    Spec::value(
        "shards",
        "0",
        "NAT event loops (threads, the first one shared with the switch) for guest flows; 0 = half the available cores, at least one",
    ),
    Spec::bool(
        "ec2-metadata-access",
        "let guests reach link-local 169.254.0.0/16 (cloud metadata services)",
    ),
    Spec::value(
        "services",
        "",
        "control endpoint without /connect (unix://, tcp://, vsock://)",
    ),
    Spec::value(
        "ssh-port",
        "2222",
        "host port forwarded to the first guest's port 22 (-1: none)",
    ),
    Spec::value(
        "notification",
        "",
        "unix:// socket told of lifecycle events (ready, connection_established, ...)",
    ),
    Spec::value(
        "pcap",
        "",
        "capture every frame of every port to this pcap file",
    ),
    Spec::bool(
        "no-vm-api",
        "do not serve the forwarder API to guests on the gateway's port 80",
    ),
    Spec::bool("debug", "debug logging"),
    Spec::value("pid-file", "", "write the process id to this file"),
    Spec::value("log-file", "", "write logs to this file instead of stderr"),
    Spec::bool("version", "print the version and exit"),
];

pub const DEFAULT_GATEWAY_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
pub const DEFAULT_DEVICE_MAC: MacAddr = MacAddr([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]);
/// HyperKit's default UUID, mapped to the first guest's MAC as upstream does.
pub const DEFAULT_VPNKIT_UUID: &str = "c3d68012-0208-11ea-9fd7-f2189899ab08";
pub const MAX_MTU: u16 = 65520;
pub const MIN_MTU: u16 = 576;
pub const MAX_SHARDS: usize = 256;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Endpoint>,
    pub listen_qemu: Option<Endpoint>,
    pub listen_bess: Option<Endpoint>,
    pub listen_vfkit: Option<Endpoint>,
    pub listen_vpnkit: Option<Endpoint>,
    pub listen_stdio: bool,
    pub listen_tap: Option<transports::tap::TapSpec>,
    pub mtu: u16,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway_ip: Ipv4Addr,
    pub device_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub vpnkit_macs: Vec<(String, MacAddr)>,
    /// NAT shards (threads).
    pub shards: usize,
    pub ec2_metadata_access: bool,
    pub services: Option<Endpoint>,
    /// None: no SSH forward.
    pub ssh_port: Option<u16>,
    pub notification: Option<PathBuf>,
    pub pcap: Option<PathBuf>,
    pub vm_api: bool,
    pub debug: bool,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
}

/// A bad command line: the flag and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flag.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "invalid value for -{}: {}", self.flag, self.message)
        }
    }
}

fn err(flag: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: flag.to_string(),
        message: message.into(),
    }
}

/// What the command line asks for.
pub enum Command {
    Run(Box<Config>),
    Version,
    Help,
}

pub fn parse<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let flags = match Flags::parse(SPECS, args) {
        Ok(f) => f,
        Err(transports::goflag::FlagError::Help) => return Ok(Command::Help),
        Err(e) => return Err(err("", e.to_string())),
    };
    if let Some(extra) = flags.rest.first() {
        return Err(err("", format!("unexpected argument {extra:?}")));
    }
    if flags.bool("version") {
        return Ok(Command::Version);
    }
    Ok(Command::Run(Box::new(from_flags(&flags)?)))
}

fn endpoint(flags: &Flags, name: &str, allowed: &[&str]) -> Result<Option<Endpoint>, ConfigError> {
    let Some(url) = flags.get(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ep: Endpoint = url.parse().map_err(|e| err(name, format!("{e}")))?;
    if !allowed.contains(&scheme(&ep)) {
        return Err(err(
            name,
            format!(
                "{url:?}: scheme {:?} is not supported here (use {})",
                scheme(&ep),
                allowed.join(" or ")
            ),
        ));
    }
    if let Some(p) = socket_path(&ep) {
        if p.exists() {
            return Err(err(
                name,
                format!("{url:?}: {} already exists", p.display()),
            ));
        }
    }
    Ok(Some(ep))
}

fn from_flags(flags: &Flags) -> Result<Config, ConfigError> {
    let mut listen = Vec::new();
    for url in flags.all("listen") {
        let ep: Endpoint = url.parse().map_err(|e| err("listen", format!("{e}")))?;
        if !["unix", "tcp", "vsock"].contains(&scheme(&ep)) {
            return Err(err(
                "listen",
                format!(
                    "{url:?}: scheme {:?} is not supported here (use unix, tcp or vsock)",
                    scheme(&ep)
                ),
            ));
        }
        if let Some(p) = socket_path(&ep) {
            if p.exists() {
                return Err(err(
                    "listen",
                    format!("{url:?}: {} already exists", p.display()),
                ));
            }
        }
        listen.push(ep);
    }
    let listen_qemu = endpoint(flags, "listen-qemu", &["unix", "tcp"])?;
    let listen_bess = endpoint(flags, "listen-bess", &["unixpacket"])?;
    let listen_vfkit = endpoint(flags, "listen-vfkit", &["unixgram"])?;
    let listen_vpnkit = endpoint(flags, "listen-vpnkit", &["unix", "tcp", "vsock"])?;
    let listen_stdio = flags.get("listen-stdio").is_some_and(|v| !v.is_empty());
    let listen_tap = match flags.get("listen-tap").filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse().map_err(|e: String| err("listen-tap", e))?),
        None => None,
    };

    let mtu_text = flags.get_or("mtu", "0");
    let mtu: u32 = mtu_text
        .parse()
        .map_err(|_| err("mtu", format!("{mtu_text:?} is not a number")))?;
    // Upstream: 0 means the default, 1500.
    let mtu = if mtu == 0 { 1500 } else { mtu };
    let mtu = u16::try_from(mtu)
        .ok()
        .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
        .ok_or_else(|| {
            err(
                "mtu",
                format!("{mtu} is out of range ({MIN_MTU}..={MAX_MTU})"),
            )
        })?;

    let subnet_text = flags.get_or("subnet", "192.168.127.0/24");
    let (subnet, prefix_len) = parse_cidr(subnet_text).ok_or_else(|| {
        err(
            "subnet",
            format!("{subnet_text:?} is not an IPv4 CIDR such as 192.168.127.0/24"),
        )
    })?;
    if prefix_len > 29 {
        return Err(err(
            "subnet",
            format!("{subnet_text:?} is too small (must be /29 or larger)"),
        ));
    }
    let (gateway_ip, device_ip, host_ip) = derive_addresses(subnet, prefix_len);

    let shards_text = flags.get_or("shards", "0");
    let shards: usize = shards_text
        .parse()
        .map_err(|_| err("shards", format!("{shards_text:?} is not a number")))?;
    if shards > MAX_SHARDS {
        return Err(err(
            "shards",
            format!("{shards} is out of range (0..={MAX_SHARDS}; 0 = half the cores)"),
        ));
    }
    let shards = if shards == 0 {
        // The other half is the VMs' own: on 2 cores one thread does everything, and a
        // flow never waits for a thread hop (perf: 18 vs 12 Gbit/s host->guest at 65520).
        (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1)
    } else {
        shards
    };

    let services = endpoint(flags, "services", &["unix", "tcp", "vsock"])?;
    let ssh_text = flags.get_or("ssh-port", "2222");
    let ssh_port = match ssh_text.parse::<i32>() {
        Ok(-1) => None,
        Ok(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p >= 1024)
                .ok_or_else(|| {
                    err(
                        "ssh-port",
                        format!("{p} is out of range (1024..=65535, or -1)"),
                    )
                })?,
        ),
        Err(_) => return Err(err("ssh-port", format!("{ssh_text:?} is not a number"))),
    };
    let notification = match flags.get("notification").filter(|v| !v.is_empty()) {
        None => None,
        Some(url) => Some(PathBuf::from(url.strip_prefix("unix://").ok_or_else(
            || err("notification", format!("{url:?} is not a unix:// URL")),
        )?)),
    };
    let pcap = flags
        .get("pcap")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);

    Ok(Config {
        services,
        ssh_port,
        notification,
        pcap,
        vm_api: !flags.bool("no-vm-api"),
        listen,
        listen_qemu,
        listen_bess,
        listen_vfkit,
        listen_vpnkit,
        listen_stdio,
        listen_tap,
        mtu,
        subnet,
        prefix_len,
        gateway_ip,
        device_ip,
        host_ip,
        gateway_mac: DEFAULT_GATEWAY_MAC,
        vpnkit_macs: vec![(DEFAULT_VPNKIT_UUID.to_string(), DEFAULT_DEVICE_MAC)],
        shards,
        ec2_metadata_access: flags.bool("ec2-metadata-access"),
        debug: flags.bool("debug"),
        pid_file: flags
            .get("pid-file")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        log_file: flags
            .get("log-file")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    })
}

pub fn scheme(ep: &Endpoint) -> &'static str {
    match ep {
        Endpoint::Unix(_) => "unix",
        Endpoint::Tcp(_) => "tcp",
        Endpoint::Vsock { .. } => "vsock",
        Endpoint::Unixgram(_) => "unixgram",
        Endpoint::Unixpacket(_) => "unixpacket",
        Endpoint::Stdio => "stdio",
    }
}

/// The filesystem path a listening socket would create, if any.
pub fn socket_path(ep: &Endpoint) -> Option<&Path> {
    match ep {
        Endpoint::Unix(p) | Endpoint::Unixgram(p) | Endpoint::Unixpacket(p) => Some(p),
        _ => None,
    }
}

/// `a.b.c.d/n`, with the host bits cleared.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// Upstream's defaults: gateway = first usable, device = second usable, host alias =
/// last usable address of the subnet.
pub fn derive_addresses(subnet: Ipv4Addr, prefix_len: u8) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    let base = u32::from(subnet);
    let size = 1u64 << (32 - u32::from(prefix_len));
    let last = u32::try_from(u64::from(base) + size - 2).unwrap_or(base);
    (
        Ipv4Addr::from(base + 1),
        Ipv4Addr::from(base + 2),
        Ipv4Addr::from(last),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse(args.iter().copied())? {
            Command::Run(c) => Ok(*c),
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let c = run(&[]).unwrap();
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.gateway_ip, Ipv4Addr::new(192, 168, 127, 1));
        assert_eq!(c.device_ip, Ipv4Addr::new(192, 168, 127, 2));
        assert_eq!(c.host_ip, Ipv4Addr::new(192, 168, 127, 254));
        assert_eq!(c.prefix_len, 24);
        assert!(c.listen.is_empty());
        assert!(c.shards >= 1);
        assert!(!c.ec2_metadata_access);
    }

    #[test]
    fn shards_and_metadata_flags() {
        let c = run(&["-shards", "3", "-ec2-metadata-access"]).unwrap();
        assert_eq!(c.shards, 3);
        assert!(c.ec2_metadata_access);
        let c = run(&["--shards=0"]).unwrap();
        assert!(c.shards >= 1);
        assert_eq!(run(&["-shards", "x"]).unwrap_err().flag, "shards");
        assert_eq!(run(&["-shards", "100000"]).unwrap_err().flag, "shards");
        assert_eq!(run(&["-shards", "-1"]).unwrap_err().flag, "shards");
    }

    #[test]
    fn both_dash_spellings_and_repeats() {
        let c = run(&[
            "--listen",
            "unix:///nonexistent-dir-x/a.sock",
            "-listen=tcp://127.0.0.1:7777",
            "-listen-qemu",
            "tcp://127.0.0.1:5555",
            "--mtu=9000",
            "-debug",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.mtu, 9000);
        assert!(c.debug);
        assert!(c.listen_qemu.is_some());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = run(&["-mtu", "70000"]).unwrap_err();
        assert_eq!(e.flag, "mtu");
        assert!(e.to_string().starts_with("invalid value for -mtu:"), "{e}");
        assert_eq!(run(&["-listen", "foo://x"]).unwrap_err().flag, "listen");
        assert_eq!(
            run(&["-listen-bess", "unix:///x"]).unwrap_err().flag,
            "listen-bess"
        );
        assert_eq!(run(&["-subnet", "10.0.0.0/30"]).unwrap_err().flag, "subnet");
        let dir = std::env::temp_dir();
        let e = run(&["-listen-qemu", &format!("unix://{}", dir.display())]).unwrap_err();
        assert!(e.message.contains("already exists"), "{e}");
        assert!(run(&["-nope"]).unwrap_err().to_string().contains("-nope"));
    }

    #[test]
    fn addresses_follow_the_subnet() {
        let (s, l) = parse_cidr("10.0.5.7/16").unwrap();
        assert_eq!((s, l), (Ipv4Addr::new(10, 0, 0, 0), 16));
        let (g, d, h) = derive_addresses(s, l);
        assert_eq!(g, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(d, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(h, Ipv4Addr::new(10, 0, 255, 254));
    }
}
