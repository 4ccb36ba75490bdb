//! DHCP server (RFC 2131): being written.
