//! MQTT 5 reason codes (section 2.4), the packets each may appear in, and the
//! mapping to the MQTT 3.1.1 CONNACK return codes and SUBACK values, so that
//! one type serves every protocol level.

use super::PacketType;

/// A reason code. Several codes share a value and differ only in name by
/// packet (0x00 is Success, Normal disconnection and Granted QoS 0); the enum
/// has one variant per value, and the other names are associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00 Success (also Normal disconnection, Granted QoS 0).
    #[default]
    Success = 0x00,
    /// 0x01 Granted QoS 1.
    GrantedQoS1 = 0x01,
    /// 0x02 Granted QoS 2.
    GrantedQoS2 = 0x02,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18 Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19 Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82 Protocol Error.
    ProtocolError = 0x82,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87 Not authorized.
    NotAuthorized = 0x87,
    /// 0x88 Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89 Server busy.
    ServerBusy = 0x89,
    /// 0x8A Banned.
    Banned = 0x8A,
    /// 0x8B Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96 Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98 Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D Server moved.
    ServerMoved = 0x9D,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// Every reason code, in numeric order.
pub const ALL_REASON_CODES: [ReasonCode; 43] = {
    use ReasonCode::*;
    [
        Success,
        GrantedQoS1,
        GrantedQoS2,
        DisconnectWithWillMessage,
        NoMatchingSubscribers,
        NoSubscriptionExisted,
        ContinueAuthentication,
        ReAuthenticate,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNameOrPassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        ServerShuttingDown,
        BadAuthenticationMethod,
        KeepAliveTimeout,
        SessionTakenOver,
        TopicFilterInvalid,
        TopicNameInvalid,
        PacketIdentifierInUse,
        PacketIdentifierNotFound,
        ReceiveMaximumExceeded,
        TopicAliasInvalid,
        PacketTooLarge,
        MessageRateTooHigh,
        QuotaExceeded,
        AdministrativeAction,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        SharedSubscriptionsNotSupported,
        ConnectionRateExceeded,
        MaximumConnectTime,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ]
};

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The code's byte.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The code with this byte, if the specification defines one.
    pub fn from_u8(value: u8) -> Option<ReasonCode> {
        ALL_REASON_CODES
            .iter()
            .copied()
            .find(|code| code.value() == value)
    }

    /// `Ok(self)` if the code may appear in `packet`, for encoders.
    pub(super) fn check_for(self, packet: PacketType) -> Result<ReasonCode, super::EncodeError> {
        if self.allowed_in(packet) {
            Ok(self)
        } else {
            Err(super::EncodeError::InvalidReasonCode { code: self, packet })
        }
    }

    /// The code for `byte` if it may appear in `packet`, for decoders.
    pub(super) fn read_for(byte: u8, packet: PacketType) -> Result<ReasonCode, super::DecodeError> {
        ReasonCode::from_u8(byte)
            .filter(|code| code.allowed_in(packet))
            .ok_or(super::DecodeError::InvalidReasonCode { code: byte, packet })
    }

    /// True for 0x80 and above: the operation failed.
    pub fn is_error(self) -> bool {
        self.value() >= 0x80
    }

    /// Whether the specification lets this code appear in `packet`
    /// (the "Packets" column of the table in section 2.4).
    pub fn allowed_in(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            _ => false,
        }
    }

    /// The MQTT 3.1 / 3.1.1 CONNACK return code (3.2.2.3 of 3.1.1) that says
    /// the same thing; codes 3.1.1 has no word for become 3 (Server
    /// unavailable), the nearest refusal it can express.
    pub fn to_connack_return_code_v3(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0x00,
            UnsupportedProtocolVersion => 0x01,
            ClientIdentifierNotValid => 0x02,
            BadUserNameOrPassword => 0x04,
            NotAuthorized | Banned | BadAuthenticationMethod => 0x05,
            _ => 0x03,
        }
    }

    /// The reason code for an MQTT 3.1 / 3.1.1 CONNACK return code.
    pub fn from_connack_return_code_v3(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match code {
            0x00 => Success,
            0x01 => UnsupportedProtocolVersion,
            0x02 => ClientIdentifierNotValid,
            0x03 => ServerUnavailable,
            0x04 => BadUserNameOrPassword,
            0x05 => NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 Failure
    /// for any error.
    pub fn to_suback_return_code_v3(self) -> u8 {
        match self {
            ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => self.value(),
            _ => 0x80,
        }
    }

    /// The reason code for an MQTT 3.1.1 SUBACK return code.
    pub fn from_suback_return_code_v3(code: u8) -> Option<ReasonCode> {
        match code {
            0x00 => Some(ReasonCode::Success),
            0x01 => Some(ReasonCode::GrantedQoS1),
            0x02 => Some(ReasonCode::GrantedQoS2),
            0x80 => Some(ReasonCode::UnspecifiedError),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_undefined_values_are_refused() {
        let mut defined = 0;
        for value in 0..=u8::MAX {
            match ReasonCode::from_u8(value) {
                Some(code) => {
                    assert_eq!(code.value(), value);
                    defined += 1;
                }
                None => assert!(!ALL_REASON_CODES.iter().any(|c| c.value() == value)),
            }
        }
        assert_eq!(defined, 43);
        assert!(ALL_REASON_CODES.windows(2).all(|w| w[0] < w[1]));
    }

    // Values from the table in section 2.4 of MQTT 5.0.
    #[test]
    fn values_match_the_specification() {
        assert_eq!(ReasonCode::NORMAL_DISCONNECTION.value(), 0x00);
        assert_eq!(ReasonCode::DisconnectWithWillMessage.value(), 0x04);
        assert_eq!(ReasonCode::NoMatchingSubscribers.value(), 0x10);
        assert_eq!(ReasonCode::ContinueAuthentication.value(), 0x18);
        assert_eq!(ReasonCode::MalformedPacket.value(), 0x81);
        assert_eq!(ReasonCode::SessionTakenOver.value(), 0x8E);
        assert_eq!(ReasonCode::PacketTooLarge.value(), 0x95);
        assert_eq!(ReasonCode::WildcardSubscriptionsNotSupported.value(), 0xA2);
    }

    #[test]
    fn packets_accept_only_their_codes() {
        assert!(ReasonCode::GrantedQoS2.allowed_in(PacketType::SubAck));
        assert!(!ReasonCode::GrantedQoS2.allowed_in(PacketType::PubAck));
        assert!(ReasonCode::NoMatchingSubscribers.allowed_in(PacketType::PubRec));
        assert!(!ReasonCode::NoMatchingSubscribers.allowed_in(PacketType::PubRel));
        assert!(ReasonCode::PacketIdentifierNotFound.allowed_in(PacketType::PubComp));
        assert!(ReasonCode::SessionTakenOver.allowed_in(PacketType::Disconnect));
        assert!(!ReasonCode::SessionTakenOver.allowed_in(PacketType::ConnAck));
        assert!(ReasonCode::ReAuthenticate.allowed_in(PacketType::Auth));
        assert!(!ReasonCode::Success.allowed_in(PacketType::Publish));
        // Counts per packet, from the table in section 2.4.
        let count = |packet| {
            ALL_REASON_CODES
                .iter()
                .filter(|code| code.allowed_in(packet))
                .count()
        };
        assert_eq!(count(PacketType::ConnAck), 22);
        assert_eq!(count(PacketType::PubAck), 9);
        assert_eq!(count(PacketType::PubRec), 9);
        assert_eq!(count(PacketType::PubRel), 2);
        assert_eq!(count(PacketType::PubComp), 2);
        assert_eq!(count(PacketType::SubAck), 12);
        assert_eq!(count(PacketType::UnsubAck), 7);
        assert_eq!(count(PacketType::Disconnect), 29);
        assert_eq!(count(PacketType::Auth), 3);
    }

    #[test]
    fn version_3_codes_map_both_ways() {
        for code in 0..=5u8 {
            let reason = ReasonCode::from_connack_return_code_v3(code).unwrap();
            assert_eq!(reason.to_connack_return_code_v3(), code);
        }
        assert_eq!(ReasonCode::from_connack_return_code_v3(6), None);
        assert_eq!(
            ReasonCode::SessionTakenOver.to_connack_return_code_v3(),
            0x03
        );
        for code in [0x00, 0x01, 0x02, 0x80] {
            let reason = ReasonCode::from_suback_return_code_v3(code).unwrap();
            assert_eq!(reason.to_suback_return_code_v3(), code);
        }
        assert_eq!(ReasonCode::NotAuthorized.to_suback_return_code_v3(), 0x80);
        assert_eq!(ReasonCode::from_suback_return_code_v3(0x03), None);
    }
}
