//! Transports: endpoints and framings, bytes in, whole frames out. Whole frames, not IP (see [`vnet`] for the one exception).
//!
//! A VM's NIC reaches gvproxy over one of several sockets, each with its own way of
//! delimiting Ethernet frames; this crate turns all of them into one [`Link`] API
//! (non-blocking, batched) and does the blocking set-up steps before it (listen/accept,
//! dial, the `/connect` HTTP head, the HyperKit handshake, vfkit peer discovery).
//!
//! ```text
//!   Endpoint URL --Listener::bind/accept, dial_*--> fd --[handshake]--> Link
//!                                                                       |
//!   qemu       unix/tcp stream   u32 BE len + frame  ----------------+  |  read_frames(budget,
//!   hyperkit   unix stream       handshake, u16 LE len + frame  -----+--+    on_frame)
//!   /connect   unix/vsock stream HTTP head, u16 LE len + frame  -----+  |  queue_frame / flush
//!   stdio      fd 0 / fd 1       u16 LE len + frame  ----------------+  |
//!   bess       seqpacket         one message = one frame  -----------+  |
//!   vfkit      unixgram          one datagram = one frame  ----------+  |
//!   TAP        /dev/net/tun fd   one read = one frame  --------------+--+
//!   vnet TAP   /dev/net/tun fd   virtio-net header + frame (TSO) ----+
//! ```
//!
#![deny(unsafe_code)]

pub mod dial;
pub mod endpoint;
pub mod framing;
pub mod goflag;
pub mod http;
pub mod hyperkit;
pub mod link;
pub mod listen;
pub mod logger;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
pub mod tap;
pub mod vnet;
#[allow(unsafe_code)]
pub mod vsock;

pub use dial::{dial_seqpacket, dial_stream, dial_unixgram};
pub use endpoint::{Endpoint, EndpointError};
pub use framing::{
    encode_frame, Framing, FramingError, StreamDecoder, MAX_STREAM_FRAME, MIN_FRAME,
};
pub use http::{connect_request, read_request_head, RequestHead, GO_CONNECT_REQUEST};
pub use hyperkit::{
    client_handshake, random_local_mac, server_handshake, COMMAND_LEN, INIT_LEN, RESPONSE_LEN,
};
pub use link::{Link, LinkCounters, LinkError, LinkIo, ReadStatus};
pub use listen::{accept_seqpacket, accept_vfkit, bind_seqpacket, bind_unixgram, Listener};
pub use sys::set_nonblocking;
