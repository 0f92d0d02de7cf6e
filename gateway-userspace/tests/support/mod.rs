//! Fixtures shared by the integration tests of `gateway-userspace`: free ports (`net`),
//! a counting allocator (`alloc`), certificates and rustls configs (`tls`), small HTTP/TLS/TCP backends (`backend`), manifests
//! (`yaml`) and gateways compiled from them (`gateway`).
//!
//! Each file under `tests/` is its own crate and declares `mod support;`, so every test binary
//! compiles all of this but uses only a part of it.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the shared fixtures"
)]

pub mod alloc;
pub mod backend;
pub mod gateway;
pub mod net;
pub mod tls;
pub mod yaml;
