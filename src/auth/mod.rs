//! Authentication and authorisation: user names and passwords from a
//! password file ([`password`]), what each client may publish and receive
//! ([`acl`]), and the MQTT 5 enhanced authentication framework
//! ([`enhanced`]), through which methods (a challenge/response such as
//! SCRAM) are plugged in by name.

pub mod acl;
pub mod authenticator;
pub mod credential;
pub mod enhanced;
pub mod mosquitto_hash;
pub mod password;
pub mod scram;

pub use authenticator::{Authenticator, SharedPasswords};
pub use enhanced::{AuthExchange, AuthStep, EnhancedAuth};
