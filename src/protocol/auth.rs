//! AUTH (3.15), MQTT 5 only: the enhanced authentication exchange.

use super::primitives::{Reader, Sink};
use super::properties::{read_reason_and_properties, write_reason_and_properties, AuthProperties};
use super::{DecodeError, EncodeError, PacketType, ReasonCode};

/// An AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: AuthProperties,
}

impl Auth {
    pub(super) fn read(reader: &mut Reader) -> Result<Auth, DecodeError> {
        // 3.15.2.1: no content means Success with no properties.
        let (reason_code, properties) = read_reason_and_properties(reader, PacketType::Auth)?;
        Ok(Auth {
            reason_code,
            properties,
        })
    }

    pub(super) fn write(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        write_reason_and_properties(self.reason_code, &self.properties, PacketType::Auth, sink)
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::vectors::Vector> {
    use super::vectors::Vector;
    use super::{Packet, ProtocolVersion::V5};
    use bytes::Bytes;

    vec![
        Vector::new(
            "AUTH 5.0 success in its short form",
            V5,
            &[0xF0, 0x00],
            Packet::Auth(Auth::default()),
        ),
        Vector::new(
            "AUTH 5.0 continue authentication with every property",
            V5,
            &[
                0xF0, 0x24, 0x18, // continue authentication
                0x22, // property length 34
                0x15, 0x00, 0x0D, b'S', b'C', b'R', b'A', b'M', b'-', b'S', b'H', b'A', b'-', b'2',
                b'5', b'6', // authentication method
                0x16, 0x00, 0x03, 0x01, 0x02, 0x03, // authentication data
                0x1F, 0x00, 0x02, b'g', b'o', // reason string
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
            ],
            Packet::Auth(Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: AuthProperties {
                    authentication_method: Some("SCRAM-SHA-256".into()),
                    authentication_data: Some(Bytes::from_static(&[1, 2, 3])),
                    reason_string: Some("go".into()),
                    user_properties: vec![("k".into(), "v".into())],
                },
            }),
        ),
    ]
}
