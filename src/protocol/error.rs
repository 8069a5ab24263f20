//! The codec's errors. A [`DecodeError`] is what a peer did wrong: each maps
//! to exactly one MQTT 5 reason code, and its message cites the rule, so a
//! log line says why a connection was closed. An [`EncodeError`] is a value
//! that cannot be put on the wire (a field or packet over the protocol's
//! size limits, a missing packet identifier).

use super::properties::{PropertyContext, PropertyId};
use super::reason::ReasonCode;
use super::PacketType;

/// Why a packet could not be decoded. `Copy + PartialEq`, so tests can
/// `assert_eq!` on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet (fixed header plus remaining length) is over the maximum.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The size the fixed header announced.
        size: usize,
        /// The maximum in force.
        max: usize,
    },
    /// Four bytes of a variable byte integer all had the continuation bit.
    #[error("[MQTT-2.1.4] variable byte integer longer than four bytes")]
    VariableByteIntegerTooLong,
    /// A variable byte integer used more bytes than its value needs.
    #[error("[MQTT-1.5.5-1] variable byte integer not encoded in the fewest bytes")]
    NonMinimalVariableByteInteger,
    /// Packet type 0, or 15 (AUTH) before MQTT 5.
    #[error("[MQTT-2.1.2] reserved or unknown control packet type {0}")]
    InvalidPacketType(u8),
    /// Fixed-header flag bits differ from the values the table requires.
    #[error("[MQTT-2.1.3-1] reserved fixed header flags of {0:?} are not the required value")]
    ReservedFlags(PacketType),
    /// A QoS field with both bits set.
    #[error("[MQTT-3.3.1-4] QoS 3 is not a valid quality of service")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A string that is not well-formed UTF-8.
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string containing U+0000.
    #[error("[MQTT-1.5.4-2] string contains the null character U+0000")]
    NullCharacter,
    /// A field runs past the end of the packet.
    #[error("[MQTT-1.5] field runs past the end of the packet")]
    UnexpectedEnd,
    /// Bytes left over after the packet's last field.
    #[error("[MQTT-2.1.4] bytes left over after the end of the packet's content")]
    TrailingBytes,
    /// `+` or `#` in a topic name.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInTopicName,
    /// A topic name of zero length where one is required.
    #[error("[MQTT-4.7.3-1] topic name is empty")]
    EmptyTopicName,
    /// A topic filter of zero length.
    #[error("[MQTT-4.7.3-1] topic filter is empty")]
    EmptyTopicFilter,
    /// `#` that is not alone in the last level.
    #[error("[MQTT-4.7.1-1] '#' must be the last character and alone in its level")]
    InvalidMultiLevelWildcard,
    /// `+` that does not occupy a whole level.
    #[error("[MQTT-4.7.1-2] '+' must occupy an entire topic level")]
    InvalidSingleLevelWildcard,
    /// A packet identifier of 0.
    #[error("[MQTT-2.2.1-3] packet identifier 0 where a non-zero one is required")]
    ZeroPacketId,
    /// SUBSCRIBE without a single topic filter.
    #[error("[MQTT-3.8.3-2] SUBSCRIBE contains no topic filter")]
    NoSubscriptions,
    /// UNSUBSCRIBE without a single topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE contains no topic filter")]
    NoUnsubscriptions,
    /// Reserved bits set in a subscription options byte.
    #[error("[MQTT-3.8.3-5] reserved bits of the subscription options are not 0")]
    SubscriptionOptionsReserved,
    /// Retain Handling 3.
    #[error("[MQTT-3.8.3.1] Retain Handling 3 is a protocol error")]
    InvalidRetainHandling,
    /// MQTT 5: Maximum QoS 3 in a subscription's options.
    #[error("3.8.3.1: Maximum QoS 3 in Subscription Options is a protocol error")]
    SubscriptionQoS3,
    /// A property identifier the specification does not define.
    #[error("[MQTT-2.2.2.2] unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property in a packet that may not carry it.
    #[error("[MQTT-2.2.2.2] property {property:?} is not allowed in {packet:?}")]
    PropertyNotAllowed {
        /// The property found.
        property: PropertyId,
        /// Where it was found.
        packet: PropertyContext,
    },
    /// A property given twice where only one is allowed.
    #[error("[MQTT-2.2.2.2] property {0:?} given more than once")]
    DuplicateProperty(PropertyId),
    /// A property whose value the specification forbids (Receive Maximum 0,
    /// Topic Alias 0, a byte flag other than 0 or 1, ...).
    #[error("[MQTT-2.2.2.2] property {0:?} has a value that is a protocol error")]
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without an Authentication Method.
    #[error("[MQTT-3.1.2.11.10] Authentication Data without an Authentication Method")]
    AuthenticationDataWithoutMethod,
    /// A reason code byte that is not defined, or not valid in this packet.
    #[error("[MQTT-2.4] reason code {code:#04x} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// The byte found.
        code: u8,
        /// The packet it was in.
        packet: PacketType,
    },
    /// CONNECT whose protocol name is neither "MQTT" nor "MQIsdp".
    #[error("[MQTT-3.1.2-1] unknown protocol name in CONNECT")]
    UnknownProtocolName,
    /// CONNECT with a protocol level other than 3, 4 or 5, or a level that
    /// does not go with the protocol name.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// Bit 0 of the CONNECT flags set.
    #[error("[MQTT-3.1.2-3] reserved bit 0 of the CONNECT flags is not 0")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0.
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// MQTT 3.1.1: a password without a user name.
    #[error("[MQTT-3.1.2-22] password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// Reserved bits of the CONNACK acknowledge flags set.
    #[error("[MQTT-3.2.2.1] reserved bits of the CONNACK acknowledge flags are not 0")]
    ConnAckReservedFlags,
    /// An empty topic name in PUBLISH without a Topic Alias.
    #[error("[MQTT-3.3.2-1] empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// A Response Topic containing a wildcard.
    #[error("[MQTT-3.3.2-14] response topic contains a wildcard")]
    WildcardInResponseTopic,
}

impl DecodeError {
    /// The MQTT 5 reason code a server sends (CONNACK or DISCONNECT) before
    /// closing a connection over this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnknownProtocolName | DecodeError::UnsupportedProtocolLevel(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DecodeError::WildcardInTopicName | DecodeError::EmptyTopicName => {
                ReasonCode::TopicNameInvalid
            }
            DecodeError::EmptyTopicFilter
            | DecodeError::InvalidMultiLevelWildcard
            | DecodeError::InvalidSingleLevelWildcard => ReasonCode::TopicFilterInvalid,
            DecodeError::NoSubscriptions
            | DecodeError::NoUnsubscriptions
            | DecodeError::InvalidRetainHandling
            | DecodeError::SubscriptionQoS3
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::AuthenticationDataWithoutMethod
            | DecodeError::EmptyTopicWithoutAlias
            | DecodeError::WildcardInResponseTopic => ReasonCode::ProtocolError,
            DecodeError::VariableByteIntegerTooLong
            | DecodeError::NonMinimalVariableByteInteger
            | DecodeError::InvalidPacketType(_)
            | DecodeError::ReservedFlags(_)
            | DecodeError::InvalidQoS
            | DecodeError::DupOnQoS0
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::UnexpectedEnd
            | DecodeError::TrailingBytes
            | DecodeError::ZeroPacketId
            | DecodeError::SubscriptionOptionsReserved
            | DecodeError::UnknownProperty(_)
            | DecodeError::PropertyNotAllowed { .. }
            | DecodeError::InvalidReasonCode { .. }
            | DecodeError::ConnectReservedFlag
            | DecodeError::WillFlagsWithoutWill
            | DecodeError::PasswordWithoutUsername
            | DecodeError::ConnAckReservedFlags => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field over 65,535 bytes.
    #[error("field of {0} bytes is longer than 65535 bytes")]
    FieldTooLong(usize),
    /// A variable byte integer over 268,435,455.
    #[error("{0} does not fit in a variable byte integer")]
    VariableByteIntegerTooLarge(u32),
    /// A packet larger than the Maximum Packet Size the peer announced.
    #[error("[MQTT-3.1.2-24] packet of {size} bytes is over the peer's Maximum Packet Size of {maximum}")]
    OverPeerMaximum {
        /// The packet's size.
        size: usize,
        /// The peer's maximum.
        maximum: usize,
    },
    /// A packet whose remaining length does not fit the fixed header.
    #[error("packet with {0} bytes of content is over the protocol's maximum")]
    PacketTooLarge(usize),
    /// A string containing U+0000.
    #[error("[MQTT-1.5.4-2] string contains the null character U+0000")]
    NullCharacter,
    /// A QoS 1 or 2 PUBLISH without a packet identifier, or a QoS 0 one with.
    #[error("[MQTT-2.2.1-2] packet identifier present exactly when QoS > 0")]
    PacketIdMismatch,
    /// A reason code the packet may not carry (section 2.4's table).
    #[error("reason code {code:?} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// The code.
        code: ReasonCode,
        /// The packet.
        packet: PacketType,
    },
    /// MQTT 3.x: a password without a user name.
    #[error("[MQTT-3.1.2-22] a 3.1.1 CONNECT cannot carry a password without a user name")]
    PasswordWithoutUsername,
    /// A packet that does not exist at the requested protocol level (AUTH
    /// before MQTT 5).
    #[error("{0:?} does not exist before MQTT 5")]
    NotInVersion(PacketType),
}
