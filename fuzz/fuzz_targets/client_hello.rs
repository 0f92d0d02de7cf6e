//! The ClientHello / SNI sniffer of TLS listeners: no panic on any bytes, and a verdict is
//! stable once decided (more bytes never turn a Hello into something else).
#![no_main]

use gateway::l7::passthrough::{parse_client_hello, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_client_hello(data);
    // Every prefix either needs more bytes or decides as the whole does.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse_client_hello(&data[..cut]) {
            Parsed::Incomplete => {}
            p => assert_eq!(p, whole, "prefix of {cut} bytes decided otherwise"),
        }
    }
});
