//! MQTT 5 enhanced authentication (section 4.12): a CONNECT naming an
//! Authentication Method starts an exchange of AUTH packets that ends in
//! CONNACK; later the client may re-authenticate with AUTH 0x19. A method
//! is an [`EnhancedAuth`]; each exchange keeps its own state in an
//! [`AuthExchange`].

use std::fmt::Debug;

use bytes::Bytes;

use crate::protocol::ReasonCode;

/// Where an exchange stands after the client's latest data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this to the client in AUTH 0x18 and wait for its answer.
    Continue(Option<Bytes>),
    /// Authenticated; this goes in CONNACK (or AUTH 0x00 when
    /// re-authenticating) as Authentication Data.
    Success(Option<Bytes>),
    /// Refused with this reason code (0x86, 0x87, 0x8C ...).
    Failure(ReasonCode),
}

/// One authentication exchange with one client.
pub trait AuthExchange: Send + Debug {
    /// Takes the client's Authentication Data (from CONNECT or an AUTH)
    /// and says what comes next.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;

    /// After success: the user the client proved to be, if the method
    /// names one (it is then the client's user name, for the ACL).
    fn username(&self) -> Option<String> {
        None
    }
}

/// An authentication method, known by its name (the Authentication Method
/// property), e.g. `SCRAM-SHA-256`.
pub trait EnhancedAuth: Send + Sync + Debug {
    /// The method's name, as clients send it.
    fn method(&self) -> &str;

    /// Starts an exchange for a client (by its client id and user name).
    fn start(&self, client_id: &str, username: Option<&str>) -> Box<dyn AuthExchange>;
}
