//! gvforwarder: the in-VM agent. It creates a TAP device, connects to gvproxy and moves Ethernet
//! frames both ways, redialling one second after any failure.
//!
//! ```text
//!   guest kernel <==TAP==> gvforwarder <==vsock/unix/tcp/unixpacket/unixgram/stdio==> gvproxy
//! ```
//!
//! Upstream-compatible command line (`-url`, `-iface`, `-mac`, `-mtu`, `-preexisting`,
//! `-stop-if-exist`, `-debug`, `-version`), plus `-protocol` (and `-uuid`, `-local`, `-vfkt`) so
//! that it can play any VM NIC: gvforwarder's `/connect`, HyperKit, QEMU, bess or vfkit. The TAP
//! is kept across redials (addresses configured on it survive a gvproxy restart) and reopened
//! only when it fails. Unless `-preexisting`, each session runs a DHCP client on the TAP
//! (udhcpc, else dhclient; see [`dhcp`]), and one that fails ends the session, as upstream.
//! SIGUSR1 logs the counters; SIGINT/SIGTERM/SIGHUP log them and exit.

#![deny(unsafe_code)]

mod cli;
mod conn;
mod dhcp;
mod forward;
mod signals;
use transports::tap;

use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use log::{debug, error, info};
use transports::goflag::{usage, FlagError, Flags};
use transports::{Framing, Link, LinkIo};

use crate::cli::{Config, Protocol, ETHERNET_HEADER_BYTES};
use crate::forward::{add, End, Totals};
use crate::signals::{Request, Signals};

const VLAN_TAG_BYTES: usize = 4;
const REDIAL_PAUSE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let flags = match Flags::parse(cli::SPECS, std::env::args().skip(1)) {
        Ok(f) => f,
        Err(FlagError::Help) => {
            eprint!("{}", usage("gvforwarder", cli::SPECS));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", usage("gvforwarder", cli::SPECS));
            return ExitCode::from(2);
        }
    };
    if flags.bool("version") {
        println!("gvforwarder version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_flags(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = transports::logger::init(config.debug, None) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(name) = config.stop_if_exist.iter().find(|n| tap::exists(n)) {
        info!("interface {name} prevented this program to run");
        return ExitCode::SUCCESS;
    }
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    Forwarder::new(&config).run(&signals);
    ExitCode::SUCCESS
}

/// The TAP and its link, kept across redials.
struct Tap {
    name: String,
    link: Link,
}

struct Forwarder<'a> {
    config: &'a Config,
    tap: Option<Tap>,
    totals: Totals,
    /// Largest frame we deliver to the TAP: `-mtu` plus the Ethernet header and a VLAN tag
    /// (the size of the links' receive slots for one frame).
    frame_bytes: usize,
    tx_limit_bytes: usize,
    /// Our udhcpc script, written when first needed and removed at exit.
    udhcpc_script: Option<dhcp::Script>,
    /// Ask for `/connect-vnet` (TAP with virtio-net headers and offloads); cleared for good
    /// once gvproxy or the TAP does not offer it.
    vnet: bool,
}

impl<'a> Forwarder<'a> {
    fn new(config: &'a Config) -> Self {
        let frame_bytes = config.mtu + ETHERNET_HEADER_BYTES + VLAN_TAG_BYTES;
        Forwarder {
            config,
            tap: None,
            totals: Totals::default(),
            frame_bytes,
            tx_limit_bytes: forward::tx_limit_bytes(frame_bytes),
            udhcpc_script: None,
            vnet: config.vnet && conn::vnet_capable(&config.target),
        }
    }

    /// Connects, forwards, redials; returns on a termination signal.
    fn run(&mut self, signals: &Signals) {
        let signal = loop {
            match self.session(signals) {
                End::Exit(s) => break s,
                End::Host(msg) => error!("{msg}"),
                End::Tap(msg) => {
                    error!("{msg}");
                    if let Some(tap) = self.tap.take() {
                        info!("closing tap device {}", tap.name);
                        add(&mut self.totals.closed_tap, &tap.link.counters());
                    }
                }
            }
            self.totals.redials += 1;
            let (totals, tap) = (&self.totals, &self.tap);
            let mut on_request = |req| {
                if req == Request::Report {
                    info!("{}", totals.report(tap.as_ref().map(|t| &t.link), None));
                }
            };
            match signals.pause(REDIAL_PAUSE, &mut on_request) {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => {
                    error!("waiting for signals: {e}");
                    std::thread::sleep(REDIAL_PAUSE);
                }
            }
        };
        info!("exiting on {signal}");
        info!(
            "{}",
            self.totals.report(self.tap.as_ref().map(|t| &t.link), None)
        );
        if let Protocol::Vfkit { local, .. } = &self.config.target.protocol {
            let _ = std::fs::remove_file(local);
        }
    }

    /// One connection: make sure the TAP is there, dial, move frames until something fails.
    /// (Upstream dials first; opening the TAP first spares gvproxy a connection per retry
    /// while the TAP cannot be had, e.g. a `-preexisting` one not created yet.)
    fn session(&mut self, signals: &Signals) -> End {
        if self.tap.is_none() {
            match self.open_tap() {
                Ok(t) => self.tap = Some(t),
                Err(e) => return End::Tap(e.to_string()),
            }
        }
        let target = &self.config.target;
        info!("dialing to {} ({})", target.url, target.protocol);
        let conn = match conn::connect(target, self.vnet) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Unsupported && self.vnet => {
                // Upstream gvproxy: the TAP goes back to plain frames, then dial again.
                info!("{e}");
                self.vnet = false;
                if let Some(tap) = self.tap.take() {
                    add(&mut self.totals.closed_tap, &tap.link.counters());
                }
                return self.session(signals);
            }
            Err(e) => return End::Host(format!("cannot connect to host: {e}")),
        };
        let (frame_bytes, tx_limit) = self.frame_limits();
        let Some(tap) = self.tap.as_mut() else {
            return End::Tap("no tap device".into());
        };
        let mut host = Link::new(conn.io, conn.framing, frame_bytes, tx_limit);
        host.prefill(&conn.leftover);
        debug!(
            "host link: {:?} framing, fds {}/{}, tx limit {} bytes",
            conn.framing,
            host.read_fd(),
            host.write_fd(),
            tx_limit
        );
        // Held for the session: dropping it reaps (or kills) a stdio peer.
        let child = conn.child;
        info!(
            "starting rx/tx loops between {} and {}",
            tap.name, target.url
        );
        // The client's first DISCOVER waits in the TAP's queue until the loop below runs.
        let mut dhcp_client = if self.config.preexisting {
            None
        } else {
            start_dhcp(&tap.name, &mut self.udhcpc_script)
        };
        let mut on_child = || match dhcp_client.as_mut()?.poll()? {
            Ok(()) => None,
            Err(msg) => Some(End::Host(msg)),
        };
        let end = forward::run(
            &mut tap.link,
            &mut host,
            signals,
            &mut self.totals,
            frame_bytes,
            &mut on_child,
        );
        // Stops a client still running (dhclient, or udhcpc without a lease yet).
        drop(dhcp_client);
        add(&mut self.totals.closed_host, &host.counters());
        drop(host);
        drop(child);
        end
    }

    fn open_tap(&mut self) -> io::Result<Tap> {
        let config = self.config;
        if config.preexisting && !tap::exists(&config.iface) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("-preexisting: interface {} does not exist", config.iface),
            ));
        }
        info!("configuring tap device {}", config.iface);
        let (name, fd) = self.open_tap_fd()?;
        if !config.preexisting {
            if let Some(mac) = config.mac {
                tap::set_mac(&name, mac)?;
            }
            info!("enabling tap device {name}");
            tap::set_up(&name)?;
        }
        debug!(
            "tap {name}: frames up to {} bytes, fd {}",
            self.frame_bytes,
            fd.as_raw_fd()
        );
        Ok(Tap {
            name,
            link: {
                let (frame_bytes, tx_limit) = self.frame_limits();
                Link::new(LinkIo::Packet(fd), Framing::Message, frame_bytes, tx_limit)
            },
        })
    }

    /// The TAP's fd: with virtio-net headers and offloads while `vnet` (the kernel hands
    /// over 64 KiB TCP segments, relayed to gvproxy as they are); otherwise plain, with
    /// offloads off (a persistent TAP keeps them from an earlier vnet session).
    fn open_tap_fd(&mut self) -> io::Result<(String, std::os::fd::OwnedFd)> {
        let iface = &self.config.iface;
        if self.vnet {
            let (name, fd) = tap::open_with(iface, true)?;
            match tap::enable_offload(&fd) {
                Ok(()) => return Ok((name, fd)),
                Err(e) => {
                    info!("{e}: plain /connect");
                    self.vnet = false;
                }
            }
        }
        let (name, fd) = tap::open(iface)?;
        if let Err(e) = tap::set_offload(&fd, 0) {
            debug!("{e}");
        }
        Ok((name, fd))
    }

    /// The largest frame (vnet: record) either side carries, and the links' queue limit.
    fn frame_limits(&self) -> (usize, usize) {
        if self.vnet {
            let bytes = transports::vnet::VNET_HDR_LEN + transports::vnet::MAX_GSO_FRAME;
            (bytes, forward::tx_limit_bytes(bytes).min(8 << 20))
        } else {
            (self.frame_bytes, self.tx_limit_bytes)
        }
    }
}

/// Starts udhcpc (with busybox's default script if installed, else ours) or dhclient on
/// `iface`. Without either, or if it cannot be started, the session goes on without one (the
/// interface can still be configured by hand); upstream would fail and redial forever.
fn start_dhcp(iface: &str, script: &mut Option<dhcp::Script>) -> Option<dhcp::Client> {
    let Some(program) = dhcp::find() else {
        error!("no DHCP client (udhcpc or dhclient) found: {iface} is left unconfigured");
        return None;
    };
    let script_path = match program {
        dhcp::Program::Udhcpc(_)
            if !std::path::Path::new(dhcp::BUSYBOX_DEFAULT_SCRIPT).exists() =>
        {
            if script.is_none() {
                match dhcp::Script::write() {
                    Ok(s) => *script = Some(s),
                    Err(e) => error!("cannot write the udhcpc script: {e}"),
                }
            }
            script.as_ref().map(|s| s.path().to_path_buf())
        }
        _ => None,
    };
    match dhcp::Client::spawn(dhcp::command(&program, iface, script_path.as_deref())) {
        Ok(c) => Some(c),
        Err(e) => {
            error!("cannot start the DHCP client {program:?}: {e}");
            None
        }
    }
}
