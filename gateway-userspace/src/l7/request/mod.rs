//! The request path's phases, one module each, as plain functions the proxy calls in order
//! (`proxy::handle`, `proxy::forward`): edge headers, CORS, fault, redirect, the upstream pick
//! and head, mirrors, breakers, attempts with retries and timeouts, the response.

pub(crate) mod attempt;
pub(crate) mod breaker;
pub(crate) mod cors;
pub(crate) mod fault;
pub(crate) mod head;
pub(crate) mod headers;
pub(crate) mod mirror;
pub(crate) mod redirect;
pub(crate) mod response;
pub(crate) mod retry;
pub(crate) mod upstream;
