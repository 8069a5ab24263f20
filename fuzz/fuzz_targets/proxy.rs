//! Fuzzes the PROXY protocol header reader (versions 1 and 2), which faces
//! the network before anything else on a listener behind a load balancer:
//! the bytes are what the balancer (or anyone who reaches the port) sends.
//! A panic is a finding, and so is a header that reads past itself: a
//! version 1 header accepted must end at its CRLF, and a version 2 one at
//! its stated length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel::transport::proxy::read_header;

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let mut rest = data;
    let header = runtime.block_on(read_header(&mut rest));
    let consumed = &data[..data.len() - rest.len()];
    if header.is_ok() {
        if consumed.starts_with(b"PROXY") {
            assert!(consumed.ends_with(b"\r\n"), "a v1 header read past its CRLF");
        } else {
            assert!(consumed.len() >= 16, "a v2 header shorter than its fixed part");
            let length = usize::from(u16::from_be_bytes([consumed[14], consumed[15]]));
            assert_eq!(consumed.len(), 16 + length, "a v2 header read past its length");
        }
    }
});
