//! The host's resolvers: the `nameserver` lines of resolv.conf, re-read when the file
//! changes (its mtime, size or inode is looked at no more than once a second).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// glibc's MAXNS: only the first three `nameserver` lines are used.
pub const MAX_NAMESERVERS: usize = 3;

const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Parse resolv.conf text into resolver addresses, all on `port` (resolv.conf has no port
/// syntax). resolv.conf(5): without any `nameserver` line the local machine's server is
/// used, so the result is never empty. IPv6 link-local addresses may carry a numeric
/// `%scope`.
pub fn parse_resolv_conf(text: &str, port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let (ip_text, scope) = match addr.split_once('%') {
            Some((ip, scope)) => (ip, scope.parse::<u32>().unwrap_or(0)),
            None => (addr, 0),
        };
        let sa = match ip_text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => SocketAddr::from((ip, port)),
            Ok(IpAddr::V6(ip)) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
            Err(_) => continue,
        };
        if out.len() < MAX_NAMESERVERS && !out.contains(&sa) {
            out.push(sa);
        }
    }
    if out.is_empty() {
        out.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

struct State {
    checked_at: Option<Instant>,
    stamp: Option<Stamp>,
    servers: Arc<[SocketAddr]>,
}

/// The resolver list, cached.
pub(crate) struct Resolvers {
    path: PathBuf,
    port: u16,
    state: Mutex<State>,
}

impl Resolvers {
    pub fn new(path: PathBuf, port: u16) -> Resolvers {
        Resolvers {
            path,
            port,
            state: Mutex::new(State {
                checked_at: None,
                stamp: None,
                servers: Arc::from(parse_resolv_conf("", port)),
            }),
        }
    }

    /// The current list; re-reads the file if it changed and was last looked at a second
    /// or more ago.
    pub fn current(&self, now: Instant) -> Arc<[SocketAddr]> {
        let mut st = self.state.lock();
        let first = st.checked_at.is_none();
        if st
            .checked_at
            .is_some_and(|t| now.saturating_duration_since(t) < RECHECK_INTERVAL)
        {
            return st.servers.clone();
        }
        st.checked_at = Some(now);
        let stamp = fs::metadata(&self.path).ok().map(|m| Stamp {
            mtime: m.modified().ok(),
            len: m.len(),
            ino: m.ino(),
        });
        if stamp != st.stamp || stamp.is_none() {
            let text = match fs::read_to_string(&self.path) {
                Ok(t) => t,
                Err(e) => {
                    if st.stamp.is_some() || first {
                        log::warn!("dns: cannot read {}: {e}", self.path.display());
                    }
                    String::new()
                }
            };
            let servers = parse_resolv_conf(&text, self.port);
            if *st.servers != *servers {
                log::info!("dns: upstream resolvers now {servers:?}");
            }
            st.servers = Arc::from(servers);
            st.stamp = stamp;
        }
        st.servers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameserver_lines() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\n\
                    ; other\nnameserver   ::1 \nnameserver fe80::1%2\nnameserver 10.0.0.1\n\
                    nameserver bogus\n";
        let v = parse_resolv_conf(text, 53);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], "127.0.0.53:53".parse().unwrap());
        assert_eq!(v[1], "[::1]:53".parse().unwrap());
        assert_eq!(v[2], "[fe80::1%2]:53".parse().unwrap());
    }

    #[test]
    fn empty_means_localhost() {
        assert_eq!(
            parse_resolv_conf("search x\n", 5353),
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
    }
}
