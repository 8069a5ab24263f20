//! MQTT 5 properties (section 2.2.2): the 27 identifiers, the packets each
//! may appear in, and one typed property set per packet kind, so that a
//! PUBLISH cannot even hold a Session Expiry Interval.
//!
//! Decoding walks the property block once: each identifier is checked
//! against the packet it arrived in and against repetition before its value
//! is read into the typed set. Encoding writes each set through a [`Sink`]
//! twice (count, then write), since the block is prefixed by its length.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::primitives::{
    put_binary, put_length, put_string, put_variable_byte_integer, Counter, Reader, Sink,
};
use super::topic::TopicName;
use super::{DecodeError, EncodeError, PacketType, QoS, ReasonCode};

/// Where a property block sits: a packet, or the will inside CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    /// The properties of a control packet.
    Packet(PacketType),
    /// The Will Properties in the CONNECT payload.
    Will,
}

/// A property identifier (the table in section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01 Byte: PUBLISH, Will.
    PayloadFormatIndicator = 0x01,
    /// 0x02 Four Byte Integer: PUBLISH, Will.
    MessageExpiryInterval = 0x02,
    /// 0x03 UTF-8 String: PUBLISH, Will.
    ContentType = 0x03,
    /// 0x08 UTF-8 String: PUBLISH, Will.
    ResponseTopic = 0x08,
    /// 0x09 Binary Data: PUBLISH, Will.
    CorrelationData = 0x09,
    /// 0x0B Variable Byte Integer: PUBLISH, SUBSCRIBE.
    SubscriptionIdentifier = 0x0B,
    /// 0x11 Four Byte Integer: CONNECT, CONNACK, DISCONNECT.
    SessionExpiryInterval = 0x11,
    /// 0x12 UTF-8 String: CONNACK.
    AssignedClientIdentifier = 0x12,
    /// 0x13 Two Byte Integer: CONNACK.
    ServerKeepAlive = 0x13,
    /// 0x15 UTF-8 String: CONNECT, CONNACK, AUTH.
    AuthenticationMethod = 0x15,
    /// 0x16 Binary Data: CONNECT, CONNACK, AUTH.
    AuthenticationData = 0x16,
    /// 0x17 Byte: CONNECT.
    RequestProblemInformation = 0x17,
    /// 0x18 Four Byte Integer: Will.
    WillDelayInterval = 0x18,
    /// 0x19 Byte: CONNECT.
    RequestResponseInformation = 0x19,
    /// 0x1A UTF-8 String: CONNACK.
    ResponseInformation = 0x1A,
    /// 0x1C UTF-8 String: CONNACK, DISCONNECT.
    ServerReference = 0x1C,
    /// 0x1F UTF-8 String: CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
    /// UNSUBACK, DISCONNECT, AUTH.
    ReasonString = 0x1F,
    /// 0x21 Two Byte Integer: CONNECT, CONNACK.
    ReceiveMaximum = 0x21,
    /// 0x22 Two Byte Integer: CONNECT, CONNACK.
    TopicAliasMaximum = 0x22,
    /// 0x23 Two Byte Integer: PUBLISH.
    TopicAlias = 0x23,
    /// 0x24 Byte: CONNACK.
    MaximumQoS = 0x24,
    /// 0x25 Byte: CONNACK.
    RetainAvailable = 0x25,
    /// 0x26 UTF-8 String Pair: every packet that has properties, and Will.
    UserProperty = 0x26,
    /// 0x27 Four Byte Integer: CONNECT, CONNACK.
    MaximumPacketSize = 0x27,
    /// 0x28 Byte: CONNACK.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29 Byte: CONNACK.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A Byte: CONNACK.
    SharedSubscriptionAvailable = 0x2A,
}

/// Every property identifier, in numeric order.
pub const ALL_PROPERTIES: [PropertyId; 27] = {
    use PropertyId::*;
    [
        PayloadFormatIndicator,
        MessageExpiryInterval,
        ContentType,
        ResponseTopic,
        CorrelationData,
        SubscriptionIdentifier,
        SessionExpiryInterval,
        AssignedClientIdentifier,
        ServerKeepAlive,
        AuthenticationMethod,
        AuthenticationData,
        RequestProblemInformation,
        WillDelayInterval,
        RequestResponseInformation,
        ResponseInformation,
        ServerReference,
        ReasonString,
        ReceiveMaximum,
        TopicAliasMaximum,
        TopicAlias,
        MaximumQoS,
        RetainAvailable,
        UserProperty,
        MaximumPacketSize,
        WildcardSubscriptionAvailable,
        SubscriptionIdentifierAvailable,
        SharedSubscriptionAvailable,
    ]
};

impl PropertyId {
    /// The identifier's value.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The property with this identifier, if one is defined.
    pub fn from_u32(value: u32) -> Option<PropertyId> {
        ALL_PROPERTIES
            .iter()
            .copied()
            .find(|id| u32::from(id.value()) == value)
    }

    /// Whether the property may appear in `context` (section 2.2.2.2).
    pub fn allowed_in(self, context: PropertyContext) -> bool {
        use PacketType as P;
        use PropertyContext::{Packet, Will};
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(context, Packet(P::Publish) | Will),
            SubscriptionIdentifier => {
                matches!(context, Packet(P::Publish) | Packet(P::Subscribe))
            }
            SessionExpiryInterval => matches!(
                context,
                Packet(P::Connect) | Packet(P::ConnAck) | Packet(P::Disconnect)
            ),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => context == Packet(P::ConnAck),
            AuthenticationMethod | AuthenticationData => matches!(
                context,
                Packet(P::Connect) | Packet(P::ConnAck) | Packet(P::Auth)
            ),
            RequestProblemInformation | RequestResponseInformation => context == Packet(P::Connect),
            WillDelayInterval => context == Will,
            ServerReference => {
                matches!(context, Packet(P::ConnAck) | Packet(P::Disconnect))
            }
            ReasonString => matches!(
                context,
                Packet(
                    P::ConnAck
                        | P::PubAck
                        | P::PubRec
                        | P::PubRel
                        | P::PubComp
                        | P::SubAck
                        | P::UnsubAck
                        | P::Disconnect
                        | P::Auth
                )
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(context, Packet(P::Connect) | Packet(P::ConnAck))
            }
            TopicAlias => context == Packet(P::Publish),
            UserProperty => !matches!(context, Packet(P::PingReq) | Packet(P::PingResp)),
        }
    }

    /// Whether the property may appear more than once in `context`: User
    /// Property anywhere, Subscription Identifier in PUBLISH (one per
    /// matching subscription). Any other repetition is a Protocol Error.
    pub fn may_repeat(self, context: PropertyContext) -> bool {
        match self {
            PropertyId::UserProperty => true,
            PropertyId::SubscriptionIdentifier => {
                context == PropertyContext::Packet(PacketType::Publish)
            }
            _ => false,
        }
    }
}

/// A packet kind's typed property set.
pub trait PropertySet: Default {
    /// Reads the value of property `id`, already checked as allowed in
    /// `context`.
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError>;

    /// Writes every property that is set, in identifier order.
    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError>;

    /// Checks rules that involve more than one property.
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }

    /// True when no property is set.
    fn is_empty(&self) -> bool {
        let mut counter = Counter::default();
        // Writing into a counter fails only for values too large to send,
        // which are not empty.
        self.write_each(&mut counter).is_ok() && counter.0 == 0
    }
}

/// Reads a property block: its length, then each property.
pub fn decode_properties<P: PropertySet>(
    reader: &mut Reader,
    context: PropertyContext,
) -> Result<P, DecodeError> {
    let length = reader.variable_byte_integer()?;
    let block = reader.take(length as usize)?;
    let mut block = Reader::new(block);
    let mut properties = P::default();
    let mut seen: u64 = 0;
    while !block.is_empty() {
        let raw = block.variable_byte_integer()?;
        let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(
            u8::try_from(raw).unwrap_or(u8::MAX),
        ))?;
        if !id.allowed_in(context) {
            return Err(not_allowed(id, context));
        }
        let bit = 1u64 << id.value();
        if seen & bit != 0 && !id.may_repeat(context) {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        #[cfg(test)]
        super::tests::record_property(id);
        properties.read_value(id, &mut block, context)?;
    }
    properties.validate()?;
    Ok(properties)
}

/// A PUBLISH property block held apart from its packet (its length, then
/// each property), as Mosquitto's persistence file keeps one.
pub fn decode_publish_properties(bytes: bytes::Bytes) -> Result<PublishProperties, DecodeError> {
    let mut reader = Reader::new(bytes);
    decode_properties(&mut reader, PropertyContext::Packet(PacketType::Publish))
}

/// Writes a property block: its length, then each property.
pub fn encode_properties<P: PropertySet>(
    properties: &P,
    sink: &mut impl Sink,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    properties.write_each(&mut counter)?;
    put_length(sink, counter.0)?;
    properties.write_each(sink)
}

// Value readers, one per data type, each enforcing the value rules the
// specification states for the property.

fn read_flag(reader: &mut Reader, id: PropertyId) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

fn read_non_zero_u16(reader: &mut Reader, id: PropertyId) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(reader.u16()?).ok_or(DecodeError::InvalidPropertyValue(id))
}

fn read_non_zero_u32(reader: &mut Reader, id: PropertyId) -> Result<NonZeroU32, DecodeError> {
    NonZeroU32::new(reader.u32()?).ok_or(DecodeError::InvalidPropertyValue(id))
}

fn read_subscription_identifier(reader: &mut Reader) -> Result<NonZeroU32, DecodeError> {
    NonZeroU32::new(reader.variable_byte_integer()?).ok_or(DecodeError::InvalidPropertyValue(
        PropertyId::SubscriptionIdentifier,
    ))
}

fn read_response_topic(reader: &mut Reader) -> Result<TopicName, DecodeError> {
    // [MQTT-3.3.2-13] (v5.0) a UTF-8 string; [MQTT-3.3.2-14] no wildcards.
    TopicName::new(reader.string()?).map_err(|error| match error {
        DecodeError::WildcardInTopicName => DecodeError::WildcardInResponseTopic,
        other => other,
    })
}

fn not_allowed(id: PropertyId, context: PropertyContext) -> DecodeError {
    DecodeError::PropertyNotAllowed {
        property: id,
        packet: context,
    }
}

// Value writers: each writes nothing when the property is absent.

fn put_id(sink: &mut impl Sink, id: PropertyId) {
    sink.put_u8(id.value());
}

fn put_flag(sink: &mut impl Sink, id: PropertyId, value: Option<bool>) {
    if let Some(value) = value {
        put_id(sink, id);
        sink.put_u8(u8::from(value));
    }
}

fn put_byte(sink: &mut impl Sink, id: PropertyId, value: Option<u8>) {
    if let Some(value) = value {
        put_id(sink, id);
        sink.put_u8(value);
    }
}

fn put_u16_property(sink: &mut impl Sink, id: PropertyId, value: Option<u16>) {
    if let Some(value) = value {
        put_id(sink, id);
        sink.put_u16(value);
    }
}

fn put_u32_property(sink: &mut impl Sink, id: PropertyId, value: Option<u32>) {
    if let Some(value) = value {
        put_id(sink, id);
        sink.put_u32(value);
    }
}

fn put_string_property(
    sink: &mut impl Sink,
    id: PropertyId,
    value: Option<&str>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        put_id(sink, id);
        put_string(sink, value)?;
    }
    Ok(())
}

fn put_binary_property(
    sink: &mut impl Sink,
    id: PropertyId,
    value: Option<&Bytes>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        put_id(sink, id);
        put_binary(sink, value)?;
    }
    Ok(())
}

fn put_subscription_identifier(sink: &mut impl Sink, value: NonZeroU32) -> Result<(), EncodeError> {
    put_id(sink, PropertyId::SubscriptionIdentifier);
    put_variable_byte_integer(sink, value.get())
}

fn put_user_properties(
    sink: &mut impl Sink,
    user_properties: &[(String, String)],
) -> Result<(), EncodeError> {
    for (name, value) in user_properties {
        put_id(sink, PropertyId::UserProperty);
        put_string(sink, name)?;
        put_string(sink, value)?;
    }
    Ok(())
}

/// User Properties, in the order received (their order is kept when a
/// message is forwarded [MQTT-3.3.2-18] (v5.0)).
pub type UserProperties = Vec<(String, String)>;

/// Properties of CONNECT (3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 PUBLISH the client will process at once; absent means 65,535.
    pub receive_maximum: Option<NonZeroU16>,
    /// Largest packet the client accepts; absent means no limit.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Highest topic alias the client accepts from the server; absent is 0.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client wants Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send Reason Strings and User Properties on
    /// failures; absent means yes.
    pub request_problem_information: Option<bool>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Name of the enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnectProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            SessionExpiryInterval => self.session_expiry_interval = Some(reader.u32()?),
            ReceiveMaximum => self.receive_maximum = Some(read_non_zero_u16(reader, id)?),
            MaximumPacketSize => self.maximum_packet_size = Some(read_non_zero_u32(reader, id)?),
            TopicAliasMaximum => self.topic_alias_maximum = Some(reader.u16()?),
            RequestResponseInformation => {
                self.request_response_information = Some(read_flag(reader, id)?)
            }
            RequestProblemInformation => {
                self.request_problem_information = Some(read_flag(reader, id)?)
            }
            UserProperty => self.user_properties.push(reader.string_pair()?),
            AuthenticationMethod => self.authentication_method = Some(reader.string()?),
            AuthenticationData => self.authentication_data = Some(reader.binary()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_u32_property(sink, SessionExpiryInterval, self.session_expiry_interval);
        put_string_property(
            sink,
            AuthenticationMethod,
            self.authentication_method.as_deref(),
        )?;
        put_binary_property(sink, AuthenticationData, self.authentication_data.as_ref())?;
        put_flag(
            sink,
            RequestProblemInformation,
            self.request_problem_information,
        );
        put_flag(
            sink,
            RequestResponseInformation,
            self.request_response_information,
        );
        put_u16_property(
            sink,
            ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u16_property(sink, TopicAliasMaximum, self.topic_alias_maximum);
        put_user_properties(sink, &self.user_properties)?;
        put_u32_property(
            sink,
            MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        Ok(())
    }

    fn validate(&self) -> Result<(), DecodeError> {
        // 3.1.2.11.10: Authentication Data without a method is a Protocol Error.
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        Ok(())
    }
}

/// Will Properties, in the CONNECT payload (3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds after the connection closes before the will is published.
    pub will_delay_interval: Option<u32>,
    /// True: the will payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Lifetime of the will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content type of the will payload.
    pub content_type: Option<String>,
    /// Response topic of the will message.
    pub response_topic: Option<TopicName>,
    /// Correlation data of the will message.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order [MQTT-3.1.3-10] (v5.0).
    pub user_properties: UserProperties,
}

impl PropertySet for WillProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            WillDelayInterval => self.will_delay_interval = Some(reader.u32()?),
            PayloadFormatIndicator => self.payload_format_indicator = Some(read_flag(reader, id)?),
            MessageExpiryInterval => self.message_expiry_interval = Some(reader.u32()?),
            ContentType => self.content_type = Some(reader.string()?),
            ResponseTopic => self.response_topic = Some(read_response_topic(reader)?),
            CorrelationData => self.correlation_data = Some(reader.binary()?),
            UserProperty => self.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_flag(sink, PayloadFormatIndicator, self.payload_format_indicator);
        put_u32_property(sink, MessageExpiryInterval, self.message_expiry_interval);
        put_string_property(sink, ContentType, self.content_type.as_deref())?;
        put_string_property(
            sink,
            ResponseTopic,
            self.response_topic.as_ref().map(TopicName::as_str),
        )?;
        put_binary_property(sink, CorrelationData, self.correlation_data.as_ref())?;
        put_u32_property(sink, WillDelayInterval, self.will_delay_interval);
        put_user_properties(sink, &self.user_properties)
    }
}

/// Properties of CONNACK (3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// The session expiry the server uses, if it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 PUBLISH the server will process at once.
    pub receive_maximum: Option<NonZeroU16>,
    /// Highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Whether the server supports retained messages; absent means yes.
    pub retain_available: Option<bool>,
    /// Largest packet the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// The client identifier the server assigned.
    pub assigned_client_identifier: Option<String>,
    /// Highest topic alias the server accepts from the client.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Whether wildcard subscriptions are supported; absent means yes.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether subscription identifiers are supported; absent means yes.
    pub subscription_identifier_available: Option<bool>,
    /// Whether shared subscriptions are supported; absent means yes.
    pub shared_subscription_available: Option<bool>,
    /// Keep alive the server requires instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics, when the client asked for it.
    pub response_information: Option<String>,
    /// Another server the client may use.
    pub server_reference: Option<String>,
    /// Name of the enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnAckProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            SessionExpiryInterval => self.session_expiry_interval = Some(reader.u32()?),
            ReceiveMaximum => self.receive_maximum = Some(read_non_zero_u16(reader, id)?),
            MaximumQoS => {
                self.maximum_qos = Some(match reader.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(id)),
                })
            }
            RetainAvailable => self.retain_available = Some(read_flag(reader, id)?),
            MaximumPacketSize => self.maximum_packet_size = Some(read_non_zero_u32(reader, id)?),
            AssignedClientIdentifier => self.assigned_client_identifier = Some(reader.string()?),
            TopicAliasMaximum => self.topic_alias_maximum = Some(reader.u16()?),
            ReasonString => self.reason_string = Some(reader.string()?),
            UserProperty => self.user_properties.push(reader.string_pair()?),
            WildcardSubscriptionAvailable => {
                self.wildcard_subscription_available = Some(read_flag(reader, id)?)
            }
            SubscriptionIdentifierAvailable => {
                self.subscription_identifier_available = Some(read_flag(reader, id)?)
            }
            SharedSubscriptionAvailable => {
                self.shared_subscription_available = Some(read_flag(reader, id)?)
            }
            ServerKeepAlive => self.server_keep_alive = Some(reader.u16()?),
            ResponseInformation => self.response_information = Some(reader.string()?),
            ServerReference => self.server_reference = Some(reader.string()?),
            AuthenticationMethod => self.authentication_method = Some(reader.string()?),
            AuthenticationData => self.authentication_data = Some(reader.binary()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_u32_property(sink, SessionExpiryInterval, self.session_expiry_interval);
        put_string_property(
            sink,
            AssignedClientIdentifier,
            self.assigned_client_identifier.as_deref(),
        )?;
        put_u16_property(sink, ServerKeepAlive, self.server_keep_alive);
        put_string_property(
            sink,
            AuthenticationMethod,
            self.authentication_method.as_deref(),
        )?;
        put_binary_property(sink, AuthenticationData, self.authentication_data.as_ref())?;
        put_string_property(
            sink,
            ResponseInformation,
            self.response_information.as_deref(),
        )?;
        put_string_property(sink, ServerReference, self.server_reference.as_deref())?;
        put_string_property(sink, ReasonString, self.reason_string.as_deref())?;
        put_u16_property(
            sink,
            ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u16_property(sink, TopicAliasMaximum, self.topic_alias_maximum);
        put_byte(sink, MaximumQoS, self.maximum_qos.map(QoS::value));
        put_flag(sink, RetainAvailable, self.retain_available);
        put_user_properties(sink, &self.user_properties)?;
        put_u32_property(
            sink,
            MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_flag(
            sink,
            WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        put_flag(
            sink,
            SubscriptionIdentifierAvailable,
            self.subscription_identifier_available,
        );
        put_flag(
            sink,
            SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        Ok(())
    }
}

/// Properties of PUBLISH (3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// True: the payload is UTF-8 text. Forwarded unchanged [MQTT-3.3.2-4].
    pub payload_format_indicator: Option<bool>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// A number standing for the topic name on this connection (never 0).
    pub topic_alias: Option<NonZeroU16>,
    /// Topic for a response [MQTT-3.3.2-14]: no wildcards.
    pub response_topic: Option<TopicName>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User Properties, kept in order [MQTT-3.3.2-18] (v5.0).
    pub user_properties: UserProperties,
    /// The identifiers of every subscription that matched (server to client
    /// only); never 0.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Content type of the payload.
    pub content_type: Option<String>,
}

impl PropertySet for PublishProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            PayloadFormatIndicator => self.payload_format_indicator = Some(read_flag(reader, id)?),
            MessageExpiryInterval => self.message_expiry_interval = Some(reader.u32()?),
            TopicAlias => self.topic_alias = Some(read_non_zero_u16(reader, id)?),
            ResponseTopic => self.response_topic = Some(read_response_topic(reader)?),
            CorrelationData => self.correlation_data = Some(reader.binary()?),
            UserProperty => self.user_properties.push(reader.string_pair()?),
            SubscriptionIdentifier => self
                .subscription_identifiers
                .push(read_subscription_identifier(reader)?),
            ContentType => self.content_type = Some(reader.string()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        OutgoingPublishProperties::from(self).write_each(sink)
    }
}

/// A PUBLISH's properties as sent to one subscriber: the message's own,
/// with the parts that differ per delivery (the remaining expiry, the
/// topic alias, the matching subscription identifiers) given separately,
/// so one stored message is never copied per subscriber.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublishProperties<'a> {
    /// The message's properties; its expiry, alias and identifiers are
    /// ignored in favour of the fields below.
    pub base: &'a PublishProperties,
    /// Message Expiry Interval to send (the remaining lifetime).
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias to send.
    pub topic_alias: Option<NonZeroU16>,
    /// Subscription Identifiers to send.
    pub subscription_identifiers: &'a [NonZeroU32],
}

impl<'a> From<&'a PublishProperties> for OutgoingPublishProperties<'a> {
    fn from(base: &'a PublishProperties) -> Self {
        OutgoingPublishProperties {
            base,
            message_expiry_interval: base.message_expiry_interval,
            topic_alias: base.topic_alias,
            subscription_identifiers: &base.subscription_identifiers,
        }
    }
}

impl OutgoingPublishProperties<'_> {
    /// Writes every property that is set.
    pub(super) fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        let base = self.base;
        put_flag(sink, PayloadFormatIndicator, base.payload_format_indicator);
        put_u32_property(sink, MessageExpiryInterval, self.message_expiry_interval);
        put_string_property(sink, ContentType, base.content_type.as_deref())?;
        put_string_property(
            sink,
            ResponseTopic,
            base.response_topic.as_ref().map(TopicName::as_str),
        )?;
        put_binary_property(sink, CorrelationData, base.correlation_data.as_ref())?;
        for identifier in self.subscription_identifiers {
            put_subscription_identifier(sink, *identifier)?;
        }
        put_u16_property(sink, TopicAlias, self.topic_alias.map(NonZeroU16::get));
        put_user_properties(sink, &base.user_properties)
    }

    /// Writes the property length, then the properties.
    pub(super) fn encode(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        let mut counter = Counter::default();
        self.write_each(&mut counter)?;
        put_length(sink, counter.0)?;
        self.write_each(sink)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: a
/// Reason String and User Properties, whichever of those packets they are in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User Properties.
    pub user_properties: UserProperties,
}

impl PropertySet for AckProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        match id {
            PropertyId::ReasonString => self.reason_string = Some(reader.string()?),
            PropertyId::UserProperty => self.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        put_string_property(
            sink,
            PropertyId::ReasonString,
            self.reason_string.as_deref(),
        )?;
        put_user_properties(sink, &self.user_properties)
    }
}

/// Properties of SUBSCRIBE (3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Identifier delivered with every message matching these filters.
    pub subscription_identifier: Option<NonZeroU32>,
    /// User Properties.
    pub user_properties: UserProperties,
}

impl PropertySet for SubscribeProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        match id {
            PropertyId::SubscriptionIdentifier => {
                self.subscription_identifier = Some(read_subscription_identifier(reader)?)
            }
            PropertyId::UserProperty => self.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        if let Some(identifier) = self.subscription_identifier {
            put_subscription_identifier(sink, identifier)?;
        }
        put_user_properties(sink, &self.user_properties)
    }
}

/// Properties of UNSUBSCRIBE (3.10.2.1): User Properties only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User Properties.
    pub user_properties: UserProperties,
}

impl PropertySet for UnsubscribeProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        match id {
            PropertyId::UserProperty => self.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        put_user_properties(sink, &self.user_properties)
    }
}

/// Properties of DISCONNECT (3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Another server the client may use.
    pub server_reference: Option<String>,
}

impl PropertySet for DisconnectProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            SessionExpiryInterval => self.session_expiry_interval = Some(reader.u32()?),
            ReasonString => self.reason_string = Some(reader.string()?),
            UserProperty => self.user_properties.push(reader.string_pair()?),
            ServerReference => self.server_reference = Some(reader.string()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_u32_property(sink, SessionExpiryInterval, self.session_expiry_interval);
        put_string_property(sink, ServerReference, self.server_reference.as_deref())?;
        put_string_property(sink, ReasonString, self.reason_string.as_deref())?;
        put_user_properties(sink, &self.user_properties)
    }
}

/// Properties of AUTH (3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Name of the enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Data of the enhanced authentication method.
    pub authentication_data: Option<Bytes>,
    /// Human-readable reason.
    pub reason_string: Option<String>,
    /// User Properties.
    pub user_properties: UserProperties,
}

impl PropertySet for AuthProperties {
    fn read_value(
        &mut self,
        id: PropertyId,
        reader: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            AuthenticationMethod => self.authentication_method = Some(reader.string()?),
            AuthenticationData => self.authentication_data = Some(reader.binary()?),
            ReasonString => self.reason_string = Some(reader.string()?),
            UserProperty => self.user_properties.push(reader.string_pair()?),
            _ => return Err(not_allowed(id, context)),
        }
        Ok(())
    }

    fn write_each(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_string_property(
            sink,
            AuthenticationMethod,
            self.authentication_method.as_deref(),
        )?;
        put_binary_property(sink, AuthenticationData, self.authentication_data.as_ref())?;
        put_string_property(sink, ReasonString, self.reason_string.as_deref())?;
        put_user_properties(sink, &self.user_properties)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        Ok(())
    }
}

/// Reads the optional tail shared by PUBACK, PUBREC, PUBREL, PUBCOMP,
/// DISCONNECT and AUTH in MQTT 5: a reason code, then a property block, each
/// of which may be left out (leaving out the code means Success / Normal
/// disconnection, leaving out the block means no properties).
pub fn read_reason_and_properties<P: PropertySet>(
    reader: &mut Reader,
    packet: PacketType,
) -> Result<(ReasonCode, P), DecodeError> {
    if reader.is_empty() {
        return Ok((ReasonCode::Success, P::default()));
    }
    let reason_code = ReasonCode::read_for(reader.u8()?, packet)?;
    if reader.is_empty() {
        return Ok((reason_code, P::default()));
    }
    let properties = decode_properties(reader, PropertyContext::Packet(packet))?;
    Ok((reason_code, properties))
}

/// Writes the tail [`read_reason_and_properties`] reads, in its shortest
/// form.
pub fn write_reason_and_properties<P: PropertySet>(
    reason_code: ReasonCode,
    properties: &P,
    packet: PacketType,
    sink: &mut impl Sink,
) -> Result<(), EncodeError> {
    let no_properties = properties.is_empty();
    if reason_code == ReasonCode::Success && no_properties {
        return Ok(());
    }
    sink.put_u8(reason_code.check_for(packet)?.value());
    if no_properties {
        return Ok(());
    }
    encode_properties(properties, sink)
}
