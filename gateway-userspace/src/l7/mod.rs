//! The L7 half of the gateway: HTTP listeners serving `plan::http`.
//!
//! - `router`: pure route selection over a precompiled table.
//! - `proxy`: the hyper server and upstream client (balancing, retries, timeouts, faults,
//!   mirrors, CORS, header operations, local replies, outlier detection, circuit breakers).

pub mod router;
