//! DISCONNECT (3.14).

use super::primitives::{Reader, Sink};
use super::properties::{
    read_reason_and_properties, write_reason_and_properties, DisconnectProperties,
};
use super::{DecodeError, EncodeError, PacketType, ProtocolVersion, ReasonCode};

/// A DISCONNECT packet. At 3.x it has no content: the reason is always
/// Normal disconnection and there are no properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why the connection is closing (MQTT 5).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode) -> Disconnect {
        Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut disconnect = Disconnect::default();
        // 3.14.2.1 (v5.0): no content means Normal disconnection; a reason
        // code alone means no properties.
        if version.is_v5() {
            (disconnect.reason_code, disconnect.properties) =
                read_reason_and_properties(reader, PacketType::Disconnect)?;
        }
        Ok(disconnect)
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Ok(());
        }
        write_reason_and_properties(
            self.reason_code,
            &self.properties,
            PacketType::Disconnect,
            sink,
        )
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::vectors::Vector> {
    use super::vectors::Vector;
    use super::Packet;
    use ProtocolVersion::{V3_1_1, V5};

    vec![
        Vector::new(
            "DISCONNECT 3.1.1",
            V3_1_1,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
        Vector::new(
            "DISCONNECT 5.0 normal disconnection in its short form",
            V5,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
        Vector::new(
            "DISCONNECT 5.0 with will message",
            V5,
            &[0xE0, 0x01, 0x04],
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWillMessage)),
        ),
        Vector::new(
            "DISCONNECT 5.0 server shutting down with every property",
            V5,
            &[
                0xE0, 0x1A, 0x8B, // server shutting down
                0x18, // property length 24
                0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
                0x1C, 0x00, 0x02, b's', b'2', // server reference
                0x1F, 0x00, 0x04, b'b', b'y', b'e', b'!', // reason string
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
            ],
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::ServerShuttingDown,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(0),
                    reason_string: Some("bye!".into()),
                    user_properties: vec![("k".into(), "v".into())],
                    server_reference: Some("s2".into()),
                },
            }),
        ),
    ]
}
