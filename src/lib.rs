//! Petrel, an MQTT broker.
//!
//! (The architecture essay grows with the broker; today Petrel is its wire
//! codec, [`protocol`].)

pub mod protocol;
