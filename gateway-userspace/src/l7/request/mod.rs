//! The request path's phases, one module each, as plain functions the proxy calls in order
//! (`proxy::handle`). Split out of `proxy.rs` step by step.

pub(crate) mod headers;
pub(crate) mod redirect;
pub(crate) mod retry;
pub(crate) mod upstream;
