//! gvproxy: the host daemon. Parses upstream gvproxy's command line, opens the VM
//! sockets, and runs the switch loop; the main thread only waits for SIGINT/SIGTERM
//! and then removes the sockets and the pid file.

mod accept;
mod api;
mod config;
mod netloop;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use log::{error, info};
use nix::sys::signal::{SigSet, Signal};

use config::{Command, Config};
use services::api::Forward;
use services::dhcp::{DhcpConfig, DhcpServer};
use services::dns::{DnsConfig, DnsServer, Zones};
use services::forwarder::Forwarder;
use services::notify::{Notification, Notifier};
use stack::gateway::GatewayConfig;
use stack::nat::NatTable;
use stack::shard::{GatewayServices, LocalConn, ShardConfig};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use switch::pcap::PcapTap;
use transports::endpoint::Endpoint;
use transports::listen::{bind_seqpacket, bind_unixgram, Listener};

const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

fn main() -> ExitCode {
    let cfg = match config::parse(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Version) => {
            println!("gvproxy version {VERSION}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            eprint!("{}", transports::goflag::usage("gvproxy", config::SPECS));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gvproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = transports::logger::init(cfg.debug, cfg.log_file.as_deref()) {
        eprintln!("gvproxy: invalid value for -log-file: {e}");
        return ExitCode::from(2);
    }
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            eprintln!("gvproxy: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Every NAT flow holds a host socket: lift the soft limit on open files to the hard one
/// (as Go's runtime does for upstream gvproxy), so thousands of guest connections fit.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!("open files limit raised from {soft} to {hard}"),
            Err(e) => log::warn!("cannot raise the open files limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => log::warn!("cannot read the open files limit: {e}"),
    }
}

/// Files to remove on the way out.
#[derive(Default)]
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn run(cfg: &Config) -> Result<(), String> {
    // Signals are taken by sigwait on this thread only: block them before any thread starts.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    info!("gvproxy version {VERSION}");
    raise_nofile_limit();
    info!(
        "virtual network {}/{}: gateway {}, first guest {}, host alias {} (127.0.0.1), mtu {}",
        cfg.subnet, cfg.prefix_len, cfg.gateway_ip, cfg.device_ip, cfg.host_ip, cfg.mtu
    );
    let mut cleanup = Cleanup::default();

    // Open every socket first, so that a bad endpoint stops start-up before anything runs.
    let bind = |flag: &str, ep: &Endpoint, private: bool, cleanup: &mut Cleanup| {
        let l = Listener::bind(ep, private)
            .map_err(|e| format!("invalid value for -{flag}: cannot listen on {ep}: {e}"))?;
        if let Some(p) = l.path() {
            cleanup.0.push(p.to_path_buf());
        }
        Ok::<_, String>(l)
    };
    let mut api = Vec::new();
    for ep in &cfg.listen {
        api.push((bind("listen", ep, true, &mut cleanup)?, ep.to_string()));
    }
    let qemu = match &cfg.listen_qemu {
        Some(ep) => Some((
            bind("listen-qemu", ep, false, &mut cleanup)?,
            ep.to_string(),
        )),
        None => None,
    };
    let services_ep = match &cfg.services {
        Some(ep) => Some((bind("services", ep, true, &mut cleanup)?, ep.to_string())),
        None => None,
    };
    let vpnkit = match &cfg.listen_vpnkit {
        Some(ep) => Some((
            bind("listen-vpnkit", ep, false, &mut cleanup)?,
            ep.to_string(),
        )),
        None => None,
    };
    let bess = match &cfg.listen_bess {
        Some(ep @ Endpoint::Unixpacket(p)) => {
            let fd = bind_seqpacket(p).map_err(|e| {
                format!("invalid value for -listen-bess: cannot listen on {ep}: {e}")
            })?;
            cleanup.0.push(p.clone());
            Some((fd, ep.to_string()))
        }
        _ => None,
    };
    let vfkit = match &cfg.listen_vfkit {
        Some(ep @ Endpoint::Unixgram(p)) => {
            let fd = bind_unixgram(p).map_err(|e| {
                format!("invalid value for -listen-vfkit: cannot listen on {ep}: {e}")
            })?;
            cleanup.0.push(p.clone());
            Some((fd, ep.to_string()))
        }
        _ => None,
    };
    let tap = match &cfg.listen_tap {
        Some(spec) => Some(
            transports::tap::open_served(spec, u32::from(cfg.mtu))
                .map_err(|e| format!("invalid value for -listen-tap: {spec}: {e}"))?,
        ),
        None => None,
    };
    if let Some(p) = &cfg.pid_file {
        std::fs::write(p, std::process::id().to_string())
            .map_err(|e| format!("invalid value for -pid-file: {}: {e}", p.display()))?;
        cleanup.0.push(p.clone());
    }

    let gw = GatewayConfig {
        mac: cfg.gateway_mac,
        ip: cfg.gateway_ip,
        prefix_len: cfg.prefix_len,
        virtual_ips: vec![cfg.host_ip],
        nat_ips: vec![cfg.host_ip],
        mtu: cfg.mtu,
    };
    // A link whose loss ends gvproxy (stdio) stops it the way a signal does.
    let stop = Box::new(|| {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGTERM);
    });
    // Host alias → loopback, as upstream's default NAT table.
    let mut nat = NatTable::new(
        cfg.subnet,
        cfg.prefix_len,
        vec![cfg.gateway_ip, cfg.host_ip],
    );
    nat.insert(cfg.host_ip, Ipv4Addr::LOCALHOST);
    nat.set_ec2_metadata_access(cfg.ec2_metadata_access);
    let mut shard_cfg = ShardConfig::new(cfg.gateway_mac, cfg.gateway_ip, cfg.mtu, nat);

    // DNS on the gateway: UDP is NATed to a server on the host's loopback, TCP
    // connections are handed over by the shards.
    let dns = DnsServer::new(
        DnsConfig::default(),
        Zones::gvproxy_defaults(cfg.gateway_ip, cfg.host_ip),
    );
    let dns_udp = match dns.bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) {
        Ok(SocketAddr::V4(a)) => a,
        Ok(a) => return Err(format!("DNS server bound to an unexpected address {a}")),
        Err(e) => return Err(format!("cannot start the DNS server: {e}")),
    };
    let (dns_tcp_tx, dns_tcp_rx) = crossbeam_channel::bounded::<LocalConn>(64);
    let (vm_api_tx, vm_api_rx) = crossbeam_channel::bounded::<LocalConn>(64);
    let mut tcp_services = vec![(53, dns_tcp_tx)];
    if cfg.vm_api {
        tcp_services.push((80, vm_api_tx));
    }
    shard_cfg.services = GatewayServices {
        udp: vec![(53, dns_udp)],
        tcp: tcp_services,
    };

    let notifier = match &cfg.notification {
        Some(p) => {
            Notifier::new(p.clone()).map_err(|e| format!("invalid value for -notification: {e}"))?
        }
        None => Notifier::default(),
    };
    let pcap = match &cfg.pcap {
        Some(p) => Some(
            PcapTap::create(p)
                .map_err(|e| format!("invalid value for -pcap: {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let dhcp = DhcpServer::new(DhcpConfig {
        gateway_ip: cfg.gateway_ip,
        gateway_mac: cfg.gateway_mac,
        subnet: cfg.subnet,
        prefix_len: cfg.prefix_len,
        host_ip: cfg.host_ip,
        dns: vec![cfg.gateway_ip],
        mtu: cfg.mtu,
        search_domains: host_search_domains(),
        static_leases: vec![(cfg.device_ip, config::DEFAULT_DEVICE_MAC)],
        ..DhcpConfig::default()
    });
    let loop_services = netloop::LoopServices {
        dhcp,
        pcap,
        notifier: notifier.clone(),
    };
    info!("NAT: {} shard(s)", cfg.shards);
    let (netloop, handle) = netloop::NetLoop::new(gw, shard_cfg, cfg.shards, loop_services, stop)
        .map_err(|e| format!("cannot start the switch loop: {e}"))?;
    thread::Builder::new()
        .name("switch".into())
        .spawn(move || netloop.run())
        .map_err(|e| format!("cannot start the switch loop: {e}"))?;

    let dialer = api::ShardDialer::new(handle.shards());
    let forwarder = Forwarder::new(dialer.clone());
    let backend = Arc::new(api::GvBackend {
        handle: handle.clone(),
        dns: dns.clone(),
        forwarder: forwarder.clone(),
        dialer,
        mtu: cfg.mtu,
    });
    {
        let dns = dns.clone();
        accept::spawn_local_service("dns-tcp", dns_tcp_rx, move |c| dns.serve_stream(c.stream));
    }
    {
        let backend = backend.clone();
        accept::spawn_local_service("vm-api", vm_api_rx, move |c| {
            services::api::serve_connection(
                c.stream,
                services::api::Endpoint::InVm {
                    guest: *c.guest.ip(),
                },
                &*backend,
            )
        });
    }
    if let Some(port) = cfg.ssh_port {
        // Upstream's static forward 127.0.0.1:<ssh-port> → <first guest>:22; a busy port
        // is worth a warning, not the whole network.
        let ssh = Forward {
            local: format!("127.0.0.1:{port}"),
            remote: SocketAddrV4::new(cfg.device_ip, 22).to_string(),
            protocol: "tcp".into(),
        };
        if let Err(e) = forwarder.expose(ssh) {
            log::warn!("-ssh-port {port}: {}", e.message);
        }
    }
    let ctx = accept::Ctx {
        handle,
        backend,
        notifier: notifier.clone(),
        mtu: cfg.mtu,
        vpnkit_macs: cfg.vpnkit_macs.clone(),
    };
    for (l, url) in api {
        info!("listening on {url}");
        accept::spawn_api(l, url, ctx.clone());
    }
    if let Some((l, url)) = vpnkit {
        info!("listening for vpnkit on {url}");
        accept::spawn_vpnkit(l, url, ctx.clone());
    }
    if let Some((l, url)) = qemu {
        info!("listening for qemu on {url}");
        accept::spawn_qemu(l, url, ctx.clone());
    }
    if let Some((fd, url)) = bess {
        info!("listening for bess on {url}");
        accept::spawn_bess(fd, url, ctx.clone());
    }
    if let Some((fd, url)) = vfkit {
        info!("listening for vfkit on {url}");
        accept::spawn_vfkit(fd, url, ctx.clone());
    }
    if let Some(tap) = tap {
        info!(
            "serving tap {} ({}offloads)",
            tap.name,
            if tap.offload { "" } else { "no " }
        );
        accept::tap_link(tap, &ctx);
    }
    if cfg.listen_stdio {
        accept::stdio_link(&ctx).map_err(|e| format!("invalid value for -listen-stdio: {e}"))?;
    }
    if let Some((l, url)) = services_ep {
        info!("listening for the API (without /connect) on {url}");
        accept::spawn_services(l, url, ctx.clone());
    }
    // Every VM socket exists now (upstream says ready before creating them).
    notifier.send(Notification::ready());

    match signals.wait() {
        Ok(sig) => info!("gvproxy exiting: {sig} caught"),
        Err(e) => error!("gvproxy exiting: sigwait failed: {e}"),
    }
    drop(forwarder);
    drop(cleanup);
    // Other threads sit in blocking accepts: end the process here.
    std::process::exit(0);
}

/// Upstream: the first `search ` line of the host's /etc/resolv.conf, split on spaces.
fn host_search_domains() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("search ").map(str::to_string))
        })
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}
