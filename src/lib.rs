//! Petrel, an MQTT broker for MQTT 3.1, 3.1.1 and 5.0.
//!
//! # Architecture
//!
//! A tokio accept loop per listener hands each TCP, TLS or WebSocket
//! connection to one task. That task frames the byte stream into packets
//! with [`protocol::decode`], runs the client's session state machine
//! (CONNECT handshake, keep-alive, QoS 1/2 windows, will), and hands each
//! PUBLISH to a shared, synchronous router: a topic trie that fans the
//! message out into the bounded inboxes of the subscribed sessions. Each
//! session task drains its inbox, encodes with [`protocol::encode`] into its
//! write buffer and flushes once per batch. The payload of a message is one
//! shared `Bytes` from the moment it is decoded to the moment the last
//! subscriber's socket has it.
//!
//! # A PUBLISH, end to end
//!
//! 1. The connection task reads into a `BytesMut`; [`protocol::decode`]
//!    checks the fixed header against the maximum packet size before
//!    buffering the body, and splits the payload out without copying it.
//! 2. The session checks the packet against the protocol's rules and the
//!    client's permissions.
//! 3. The router stores a retained message when RETAIN is set, walks the
//!    trie once under a read lock, and `try_send`s a shared message into
//!    each subscriber's inbox.
//! 4. The publisher gets its PUBACK or PUBREC once the router has returned.
//!
//! # What is here today
//!
//! The wire codec, [`protocol`]: every control packet of the three protocol
//! levels as typed values, every MQTT 5 property and reason code, a
//! streaming decoder that refuses every malformed packet with a typed error
//! naming the rule, and an encoder that is its exact inverse. The listener,
//! session and router modules follow.

pub mod protocol;
