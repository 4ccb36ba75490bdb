//! Lifecycle notifications (`-notification unix:///path`), as upstream's
//! pkg/notification: for each event gvproxy connects to the listener's unix socket,
//! writes one JSON object and a newline, and closes.
//!
//! Events go through a bounded queue to a thread of their own, so a dead or slow
//! listener never blocks the data path: when the queue is full the event is dropped
//! with a warning, and a delivery failure is logged and skipped.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::{debug, warn};
use serde::Serialize;

/// Upstream's queue length.
const QUEUE: usize = 100;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One event, serialized as upstream's `NotificationMessage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub notification_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

impl Notification {
    pub fn ready() -> Self {
        Notification {
            notification_type: "ready",
            mac_address: None,
        }
    }
    pub fn connection_established(mac: impl ToString) -> Self {
        Notification {
            notification_type: "connection_established",
            mac_address: Some(mac.to_string()),
        }
    }
    pub fn connection_closed(mac: impl ToString) -> Self {
        Notification {
            notification_type: "connection_closed",
            mac_address: Some(mac.to_string()),
        }
    }
    pub fn hypervisor_error() -> Self {
        Notification {
            notification_type: "hypervisor_error",
            mac_address: None,
        }
    }
}

/// Cheap to clone; a sender without a socket does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    tx: Option<Sender<Notification>>,
}

impl Notifier {
    /// A notifier that delivers to the unix socket at `path`.
    pub fn new(path: PathBuf) -> std::io::Result<Notifier> {
        let (tx, rx) = crossbeam_channel::bounded::<Notification>(QUEUE);
        thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                for n in rx {
                    if let Err(e) = deliver(&path, &n) {
                        warn!(
                            "notification {} to {} failed: {e}",
                            n.notification_type,
                            path.display()
                        );
                    }
                }
            })?;
        Ok(Notifier { tx: Some(tx) })
    }

    /// Queues `n`; never blocks.
    pub fn send(&self, n: Notification) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(n) {
            Ok(()) => {}
            Err(TrySendError::Full(n)) => {
                warn!("notification queue full: {} dropped", n.notification_type)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn deliver(path: &PathBuf, n: &Notification) -> std::io::Result<()> {
    let mut s = UnixStream::connect(path)?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut line = serde_json::to_vec(n).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    debug!(
        "notification sent: {}",
        String::from_utf8_lossy(&line).trim_end()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    #[test]
    fn delivers_json_lines_in_order() {
        let dir = std::env::temp_dir().join(format!("notify-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let n = Notifier::new(path.clone()).unwrap();
        n.send(Notification::ready());
        n.send(Notification::connection_established("5a:94:ef:e4:0c:ee"));
        n.send(Notification::connection_closed("5a:94:ef:e4:0c:ee"));
        n.send(Notification::hypervisor_error());
        let mut lines = Vec::new();
        for _ in 0..4 {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                "{\"notification_type\":\"ready\"}\n",
                "{\"notification_type\":\"connection_established\",\"mac_address\":\"5a:94:ef:e4:0c:ee\"}\n",
                "{\"notification_type\":\"connection_closed\",\"mac_address\":\"5a:94:ef:e4:0c:ee\"}\n",
                "{\"notification_type\":\"hypervisor_error\"}\n",
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_listener_never_blocks() {
        let n = Notifier::new(PathBuf::from("/nonexistent/notify.sock")).unwrap();
        for _ in 0..1000 {
            n.send(Notification::ready());
        }
        Notifier::default().send(Notification::ready());
    }
}
