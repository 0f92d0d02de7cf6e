//! The gateway agent: parse -> validate -> compile into an immutable plan -> apply.
//!
//! - `config`: reads manifests, validates them, compiles them into a `plan::Plan` (pure).
//! - `maglev`: builds the weighted Maglev ring of a service (pure, shared with `l4proxy`).
//! - `dataplane`: the only module that talks to the kernel: loads, pins and attaches the XDP
//!   program and applies plans to its maps by diff.
//! - `l4proxy`: the userspace TCP/UDP path, used where XDP is not available.
//! - `l7`: the HTTP proxy serving the plan's HTTP listeners (route table swapped whole).
//! - `k8s`: `run --kubernetes`: the objects from the API server's list/watch, as load input.
//! - `agent`: the composition root of `gateway run`.

pub mod agent;
pub mod check;
pub mod config;
pub mod dataplane;
pub mod dump;
pub mod explain;
pub mod k8s;
pub mod l4proxy;
pub mod l7;
pub mod logging;
pub mod maglev;
pub mod metrics;
pub mod plan;
