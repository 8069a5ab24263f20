//! The CONNECT handshake's decisions, pure: CONNECT x configuration x
//! where the connection comes from -> the client id, or a refusal
//! ([`admit`]); then, with what authentication proved, CONNECT x
//! configuration -> what is granted and the CONNACK that says so, or a
//! refusal ([`grant`]). No I/O and no clock: the async steps around them
//! read the packets, check the passwords and claim the session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::EnhancedAuth;
use crate::config::Config;
use crate::protocol::topic::check_bounds;
use crate::protocol::{ConnAck, ConnAckProperties, Connect, Packet, ReasonCode};
use crate::session::negotiate::Negotiated;
use crate::session::Origin;

/// Client ids starting with this are the broker's bridges' own sessions
/// (`$bridge/<name>`); clients may not use them.
pub const BRIDGE_ID_PREFIX: &str = "$bridge/";

/// Why a connection is refused.
#[derive(Debug)]
pub struct Refusal {
    /// The refusing CONNACK's reason code; none when the connection is
    /// closed without one.
    pub reason_code: Option<ReasonCode>,
    /// The server the client is sent to (a redirect's Server Reference).
    pub server_reference: Option<String>,
    /// What is logged.
    pub why: &'static str,
    /// Whether it counts as a protocol error (and is logged as a warning
    /// when it has no CONNACK to say it).
    pub protocol_error: bool,
}

impl Refusal {
    /// A refusing CONNACK with `reason_code`.
    pub fn with(reason_code: ReasonCode, why: &'static str, protocol_error: bool) -> Refusal {
        Refusal {
            reason_code: Some(reason_code),
            server_reference: None,
            why,
            protocol_error,
        }
    }

    /// A close without CONNACK.
    pub fn silent(why: &'static str, protocol_error: bool) -> Refusal {
        Refusal {
            reason_code: None,
            server_reference: None,
            why,
            protocol_error,
        }
    }

    /// The refusing CONNACK's properties.
    pub fn properties(&self) -> ConnAckProperties {
        ConnAckProperties {
            server_reference: self.server_reference.clone(),
            ..ConnAckProperties::default()
        }
    }
}

/// What CONNECT asks that the broker settles before authentication: the
/// will topic's bounds, whether clients are sent elsewhere, whether an
/// anonymous client may connect, the client id. The client id to use,
/// and whether the broker assigned it.
pub fn admit(
    config: &Config,
    connect: &Connect,
    origin: &Origin,
    has_passwords: bool,
) -> Result<(Arc<str>, bool), Refusal> {
    if let Some(will) = &connect.will {
        if check_bounds(
            will.topic.as_str(),
            config.max_topic_length,
            config.max_topic_levels,
        )
        .is_err()
        {
            return Err(Refusal::with(
                ReasonCode::TopicNameInvalid,
                "will topic over max_topic_length or max_topic_levels",
                true,
            ));
        }
    }
    if let Some(redirect) = config.redirect.as_ref().filter(|r| r.on_connect) {
        let reason_code = if !connect.protocol.is_v5() {
            ReasonCode::ServerUnavailable
        } else if redirect.permanent {
            ReasonCode::ServerMoved
        } else {
            ReasonCode::UseAnotherServer
        };
        return Err(Refusal {
            server_reference: Some(redirect.server_reference.clone()),
            ..Refusal::with(
                reason_code,
                "redirecting the client ([redirect] on_connect)",
                false,
            )
        });
    }
    if !allows_anonymous(config, origin) && !authenticates(connect, origin, has_passwords) {
        return Err(Refusal::with(
            ReasonCode::NotAuthorized,
            "anonymous clients are not allowed; refusing",
            false,
        ));
    }
    client_id(connect)
}

/// Whether an anonymous client may connect where it came in. Unset
/// everywhere: allowed, unless a password file says logins are expected.
fn allows_anonymous(config: &Config, origin: &Origin) -> bool {
    origin
        .allow_anonymous
        .or(config.allow_anonymous)
        .unwrap_or(config.password_file.is_none())
}

/// A client is anonymous unless it authenticates: an enhanced
/// authentication method, a client certificate, or a user name checked
/// against the password file.
fn authenticates(connect: &Connect, origin: &Origin, has_passwords: bool) -> bool {
    connect.properties.authentication_method.is_some()
        || origin
            .identity
            .as_ref()
            .is_some_and(|identity| identity.certificate)
        || (connect.username.is_some() && has_passwords)
}

/// The client id to use, and whether the broker assigned it: the
/// client's, or a new unique one for an empty id [MQTT-3.1.3-6] (v3.1.1)
/// [MQTT-3.1.3-6] (v5.0). At 3.1.1 an empty id needs clean session, or it
/// is refused with CONNACK 0x02 [MQTT-3.1.3-8] (v3.1.1); the bridges' ids
/// are the broker's own.
fn client_id(connect: &Connect) -> Result<(Arc<str>, bool), Refusal> {
    if connect.client_id.starts_with(BRIDGE_ID_PREFIX) {
        return Err(Refusal::with(
            ReasonCode::ClientIdentifierNotValid,
            "client id reserved for bridges; refusing",
            true,
        ));
    }
    if connect.client_id.is_empty() && !connect.clean_start && !connect.protocol.is_v5() {
        return Err(Refusal::with(
            ReasonCode::ClientIdentifierNotValid,
            "[MQTT-3.1.3-8] empty client id without clean session; refusing",
            true,
        ));
    }
    if !connect.client_id.is_empty() {
        return Ok((Arc::from(connect.client_id.as_str()), false));
    }
    Ok((Arc::from(assign_client_id()), true))
}

/// A client id unique within this broker's lifetime and, through the start
/// time, across restarts.
fn assign_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    });
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("petrel-{start:x}-{sequence}")
}

/// What authentication proved.
#[derive(Debug, Default)]
pub struct Login {
    /// The enhanced authentication method the client used, and the data
    /// its last step gives CONNACK.
    pub method: Option<(Arc<dyn EnhancedAuth>, Option<bytes::Bytes>)>,
    /// The user the method proved, if it names one.
    pub user: Option<String>,
}

/// What the handshake grants.
#[derive(Debug)]
pub struct Decision {
    /// Keep-alive, expiry and the client's limits.
    pub negotiated: Negotiated,
    /// The CONNACK, whole but for Session Present (which does not change
    /// its size), set once the session is claimed.
    pub connack: ConnAck,
}

/// Settles `connect` against `config` once the client is authenticated:
/// what is granted, and the CONNACK that tells an MQTT 5 client the truth
/// about the broker; or the refusal.
pub fn grant(
    config: &Config,
    connect: &Connect,
    (client_id, assigned): (&str, bool),
    login: &Login,
) -> Result<Decision, Refusal> {
    let mut negotiated = Negotiated::new(config, connect, assigned, client_id)
        .map_err(|(reason_code, why)| Refusal::with(reason_code, why, true))?;
    let mut properties = std::mem::take(&mut negotiated.connack);
    if let Some((method, data)) = &login.method {
        // [MQTT-4.12.0-5] (v5.0): CONNACK names the method.
        properties.authentication_method = Some(method.method().to_owned());
        properties.authentication_data = data.clone();
    }
    let connack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties,
    };
    // [MQTT-3.1.2-24] (v5.0): a client whose Maximum Packet Size cannot
    // take even the CONNACK cannot be served; closed before its session is
    // touched.
    let connack_size = Packet::ConnAck(connack.clone())
        .encoded_len(connect.protocol)
        .unwrap_or(usize::MAX);
    if connack_size > negotiated.max_outgoing_packet as usize {
        return Err(Refusal::silent(
            "the client's Maximum Packet Size is smaller than CONNACK; closing",
            true,
        ));
    }
    Ok(Decision {
        negotiated,
        connack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ConnectProperties, ProtocolVersion};

    fn connect(client_id: &str, protocol: ProtocolVersion, clean_start: bool) -> Connect {
        Connect {
            protocol,
            clean_start,
            keep_alive: 30,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge: false,
        }
    }

    fn origin() -> Origin {
        Origin {
            peer: "127.0.0.1:1".parse().unwrap(),
            allow_anonymous: None,
            identity: None,
            listener: None,
        }
    }

    fn refused(result: Result<(Arc<str>, bool), Refusal>) -> ReasonCode {
        result.unwrap_err().reason_code.unwrap()
    }

    // [MQTT-3.1.3-6] [MQTT-3.1.3-8] (v3.1.1), and the bridges' ids.
    #[test]
    fn client_ids_are_checked_or_assigned() {
        let config = Config::default();
        let v311 = ProtocolVersion::V3_1_1;
        let (id, assigned) = admit(&config, &connect("a", v311, false), &origin(), false).unwrap();
        assert_eq!((&*id, assigned), ("a", false));
        let (id, assigned) = admit(&config, &connect("", v311, true), &origin(), false).unwrap();
        assert!(assigned && id.starts_with("petrel-"));
        let empty_persistent = admit(&config, &connect("", v311, false), &origin(), false);
        assert_eq!(
            refused(empty_persistent),
            ReasonCode::ClientIdentifierNotValid
        );
        let (_, assigned) = admit(
            &config,
            &connect("", ProtocolVersion::V5, false),
            &origin(),
            false,
        )
        .unwrap();
        assert!(assigned, "MQTT 5 assigns one whatever Clean Start says");
        let bridge = admit(&config, &connect("$bridge/x", v311, true), &origin(), false);
        assert_eq!(refused(bridge), ReasonCode::ClientIdentifierNotValid);
    }

    // Anonymous clients: refused by the listener's or the broker's rule,
    // allowed by default unless a password file is configured.
    #[test]
    fn anonymous_clients_follow_the_listener_then_the_broker() {
        let closed = Config {
            allow_anonymous: Some(false),
            ..Config::default()
        };
        let plain = connect("a", ProtocolVersion::V5, true);
        assert_eq!(
            refused(admit(&closed, &plain, &origin(), false)),
            ReasonCode::NotAuthorized
        );
        let open_listener = Origin {
            allow_anonymous: Some(true),
            ..origin()
        };
        assert!(admit(&closed, &plain, &open_listener, false).is_ok());
        let with_user = Connect {
            username: Some("u".to_owned()),
            ..plain.clone()
        };
        assert!(admit(&closed, &with_user, &origin(), true).is_ok());
        assert!(admit(&Config::default(), &plain, &origin(), false).is_ok());
    }

    // [MQTT-3.2.2-16] (v5.0): an assigned id is named in CONNACK; an
    // authentication method is named too [MQTT-4.12.0-5] (v5.0).
    #[test]
    fn connack_tells_what_was_granted() {
        let config = Config::default();
        let decision = grant(
            &config,
            &connect("", ProtocolVersion::V5, true),
            ("petrel-1-0", true),
            &Login::default(),
        )
        .unwrap();
        let properties = &decision.connack.properties;
        assert_eq!(
            properties.assigned_client_identifier.as_deref(),
            Some("petrel-1-0")
        );
        assert_eq!(decision.negotiated.keep_alive, 30);
    }
}
