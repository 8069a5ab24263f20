//! Feeds arbitrary bytes to the decoder, at a protocol level and maximum
//! packet size taken from the first two bytes, and re-encodes every packet
//! it accepts: the re-encoded bytes must decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petrel::protocol::{decode, encode, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let max_packet_size = if selector & 0x80 != 0 { 64 } else { 1 << 20 };
    let mut buf = BytesMut::from(rest);
    loop {
        match decode(&mut buf, max_packet_size, version) {
            Ok(Some(packet)) => {
                let mut encoded = BytesMut::new();
                encode(&packet, version, &mut encoded).expect("an accepted packet re-encodes");
                let again = decode(&mut encoded, usize::MAX, version)
                    .expect("re-encoded bytes decode")
                    .expect("re-encoded bytes are a whole packet");
                assert_eq!(again, packet);
                assert!(encoded.is_empty());
            }
            Ok(None) | Err(_) => break,
        }
    }
});
