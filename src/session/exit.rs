//! Why a connection ends, and everything that follows from it, in one
//! place: whether the will is published, the DISCONNECT this side sends
//! (its reason code, a Reason String naming the rule broken, the redirect
//! on shutdown), the log line with its level, and the counter.

use std::fmt;
use std::io;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{DecodeError, Disconnect, DisconnectProperties, ReasonCode};

/// Why a connection ended.
#[derive(Debug)]
pub enum Exit {
    /// The peer sent DISCONNECT with this reason code: 0x00 is a normal
    /// end; any other (0x04 asks for the will, an error code ends the
    /// connection as abnormally as a lost one) keeps the will.
    Disconnect(ReasonCode),
    /// The peer closed the connection without DISCONNECT.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// Nothing arrived within 1.5 times the keep-alive.
    KeepAlive,
    /// A packet could not be decoded.
    Malformed(DecodeError),
    /// A packet broke a protocol rule: the reason code to close with, and
    /// the rule.
    Violation(ReasonCode, &'static str),
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// An administrator closed the connection (the admin API); `delete`:
    /// and deleted the session.
    Kicked {
        /// Whether the session ends too.
        delete: bool,
    },
}

impl Exit {
    /// Whether the will is published: on every end but a normal DISCONNECT
    /// [MQTT-3.1.2-8] [MQTT-3.14.4-3] (v3.1.1) [MQTT-3.1.2-10] (v5.0).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Disconnect(ReasonCode::Success))
    }

    /// Whether the peer's side is already closed (nothing to drain).
    pub fn peer_closed(&self) -> bool {
        matches!(self, Exit::Closed | Exit::Io(_))
    }

    /// The reason code of the DISCONNECT the broker sends an MQTT 5 client
    /// before closing [MQTT-4.13.1-1] (v5.0); none when the client ended it.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            Exit::Disconnect(_) | Exit::Closed | Exit::Io(_) => None,
            Exit::KeepAlive => Some(ReasonCode::KeepAliveTimeout),
            Exit::Malformed(error) => Some(error.reason_code()),
            Exit::Violation(reason_code, _) => Some(*reason_code),
            Exit::TakenOver => Some(ReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Exit::Kicked { .. } => Some(ReasonCode::AdministrativeAction),
        }
    }

    /// The DISCONNECT the broker sends an MQTT 5 client: the reason code, a
    /// Reason String naming the rule broken, and on shutdown the redirect
    /// if one is configured (0x9C / 0x9D with a Server Reference).
    pub fn server_disconnect(&self, config: &Config) -> Option<Disconnect> {
        let mut reason_code = self.disconnect_reason()?;
        let mut properties = DisconnectProperties::default();
        match self {
            Exit::Violation(_, rule) => properties.reason_string = Some((*rule).to_owned()),
            Exit::Malformed(error) => properties.reason_string = Some(error.to_string()),
            Exit::Shutdown => {
                if let Some(redirect) = &config.redirect {
                    reason_code = if redirect.permanent {
                        ReasonCode::ServerMoved
                    } else {
                        ReasonCode::UseAnotherServer
                    };
                    properties.server_reference = Some(redirect.server_reference.clone());
                }
            }
            _ => {}
        }
        Some(Disconnect {
            reason_code,
            properties,
        })
    }

    /// The DISCONNECT a bridge sends its remote: a normal one when it
    /// stops (so the remote drops the bridge's will, if it had one); at
    /// MQTT 5, one with the reason code when the remote broke a rule.
    pub fn client_disconnect(&self, v5: bool) -> Option<Disconnect> {
        match self {
            Exit::Shutdown | Exit::TakenOver | Exit::Kicked { .. } => {
                Some(Disconnect::new(ReasonCode::Success))
            }
            Exit::Malformed(_) | Exit::Violation(..) if v5 => {
                self.disconnect_reason().map(Disconnect::new)
            }
            _ => None,
        }
    }

    /// Logs the end of a client's connection (in its span) and counts it;
    /// `keep_alive` is the one it had.
    pub fn record(&self, metrics: &Metrics, keep_alive: u16) {
        match self {
            Exit::Disconnect(ReasonCode::Success) => tracing::info!("client disconnected"),
            Exit::Disconnect(_) => {
                tracing::info!("client disconnected with a reason code that keeps its will");
            }
            Exit::Closed => tracing::info!("client closed the connection without DISCONNECT"),
            Exit::Io(error) => tracing::info!(%error, "connection lost"),
            Exit::KeepAlive => {
                metrics.keep_alive_timeouts.increment();
                tracing::info!(
                    keep_alive,
                    "[MQTT-3.1.2-24] nothing received within 1.5 x keep alive; closing"
                );
            }
            Exit::Malformed(error) => {
                metrics.protocol_error(error.reason_code() as u8);
                tracing::warn!(%error, "malformed packet; closing");
            }
            Exit::Violation(reason_code, rule) => {
                metrics.protocol_error(*reason_code as u8);
                tracing::warn!(?reason_code, rule, "protocol violation; closing");
            }
            Exit::TakenOver => {
                metrics.takeovers.increment();
                tracing::info!("[MQTT-3.1.4-2] session taken over by a new connection");
            }
            Exit::Shutdown => tracing::info!("closing: server shutting down"),
            Exit::Kicked { delete: false } => tracing::info!("closed by an administrator"),
            Exit::Kicked { delete: true } => {
                tracing::info!("closed by an administrator, who deleted the session");
            }
        }
    }
}

/// How a bridge's log line says why its link ended.
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Disconnect(code) => write!(f, "the remote sent DISCONNECT {code:?}"),
            Exit::Closed => f.write_str("the remote closed the connection"),
            Exit::Io(error) => write!(f, "{error}"),
            Exit::KeepAlive => f.write_str("nothing from the remote within 1.5 x keep-alive"),
            Exit::Malformed(error) => write!(f, "malformed packet: {error}"),
            Exit::Violation(_, rule) => write!(f, "protocol error: {rule}"),
            Exit::TakenOver => f.write_str("taken over"),
            Exit::Shutdown => f.write_str("shutting down"),
            Exit::Kicked { .. } => f.write_str("reconnect asked by an administrator"),
        }
    }
}
