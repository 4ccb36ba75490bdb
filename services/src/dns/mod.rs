//! DNS server: being written.
