//! Loopback ports.

/// A port on 127.0.0.1 that was free a moment ago (the listener that found it is closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A closed port: connections are refused.
pub fn dead_port() -> u16 {
    free_port()
}
