//! Gateway services: DHCP, DNS (static zones + forwarding to the host's resolvers),
//! port forwarding and the HTTP control API.

pub mod api;
pub mod dhcp;
pub mod dns;
pub mod forwarder;
pub mod notify;
