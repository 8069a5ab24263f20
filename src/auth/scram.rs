//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced authentication
//! method, the way EMQX offers it: CONNECT carries the client-first
//! message, the broker answers with AUTH (server-first), the client sends
//! AUTH (client-final), and CONNACK carries server-final. The password
//! never crosses the wire, and the broker keeps only the salted keys,
//! written to the password file by `petrel passwd`.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::credential::{hmac, Credential};
use super::enhanced::{AuthExchange, AuthStep, EnhancedAuth};
use super::password::PasswordFile;
use crate::protocol::ReasonCode;

/// The method's name in the Authentication Method property.
pub const METHOD: &str = "SCRAM-SHA-256";
/// The SCRAM-SHA-256 method, checking against the password file in force.
#[derive(Debug)]
pub struct Scram {
    passwords: Arc<RwLock<Option<Arc<PasswordFile>>>>,
}

impl Scram {
    /// The method, reading credentials from `passwords` (shared with the
    /// broker, so a reload is seen).
    pub fn new(passwords: Arc<RwLock<Option<Arc<PasswordFile>>>>) -> Scram {
        Scram { passwords }
    }
}

impl EnhancedAuth for Scram {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self, _client_id: &str, _username: Option<&str>) -> Box<dyn AuthExchange> {
        let passwords = self
            .passwords
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::new(Exchange {
            passwords,
            state: State::Start,
            authenticated: None,
        })
    }
}

#[derive(Debug)]
enum State {
    Start,
    /// Sent server-first; waiting for client-final.
    Challenged {
        credential: Box<Credential>,
        user: String,
        /// The GS2 header's base64, which client-final repeats (`c=`).
        channel_binding: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

#[derive(Debug)]
struct Exchange {
    passwords: Option<Arc<PasswordFile>>,
    state: State,
    /// The user, once the proof checked out.
    authenticated: Option<String>,
}

/// The value of attribute `name` (`n`, `r`, `c`, `p` ...) in a SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// A SCRAM user name: `=2C` is `,` and `=3D` is `=` (RFC 5802, 5.1).
fn unescape(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

impl Exchange {
    fn client_first(&mut self, data: &[u8]) -> AuthStep {
        let failure = AuthStep::Failure(ReasonCode::NotAuthorized);
        let Ok(message) = std::str::from_utf8(data) else {
            return failure;
        };
        // No channel binding: the GS2 header is "n,," (or "y,,").
        let Some((header, bare)) = ["n,,", "y,,"]
            .iter()
            .find_map(|header| message.strip_prefix(header).map(|bare| (*header, bare)))
        else {
            return failure;
        };
        let (Some(user), Some(client_nonce)) = (attribute(bare, 'n'), attribute(bare, 'r')) else {
            return failure;
        };
        let user = unescape(user);
        let credential = self
            .passwords
            .as_ref()
            .and_then(|passwords| passwords.scram(&user).cloned());
        // An unknown user still gets a challenge, with a salt that is the
        // same every time for that name and keys no proof can match, so
        // the exchange does not tell which user names exist.
        let credential = credential.unwrap_or_else(|| Credential::unknown(&user));
        let mut random = [0u8; 18];
        OsRng.fill_bytes(&mut random);
        let nonce = format!("{client_nonce}{}", BASE64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = Bytes::from(server_first.clone().into_bytes());
        self.state = State::Challenged {
            credential: Box::new(credential),
            user,
            channel_binding: BASE64.encode(header),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        AuthStep::Continue(Some(reply))
    }
}

impl AuthExchange for Exchange {
    fn username(&self) -> Option<String> {
        self.authenticated.clone()
    }

    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        let failure = AuthStep::Failure(ReasonCode::NotAuthorized);
        let data = data.unwrap_or_default();
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => self.client_first(data),
            State::Challenged {
                credential,
                user,
                channel_binding,
                client_first_bare,
                server_first,
                nonce,
            } => {
                let Ok(message) = std::str::from_utf8(data) else {
                    return failure;
                };
                let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
                    return failure;
                };
                if attribute(without_proof, 'r') != Some(nonce.as_str())
                    || attribute(without_proof, 'c') != Some(channel_binding.as_str())
                {
                    return failure;
                }
                let Some(proof) = BASE64.decode(proof).ok().filter(|p| p.len() == 32) else {
                    return failure;
                };
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac(&credential.stored_key, auth_message.as_bytes());
                let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                let stored: [u8; 32] = Sha256::digest(&client_key).into();
                // Compare without an early exit.
                let differs = stored
                    .iter()
                    .zip(credential.stored_key)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if differs != 0 {
                    return AuthStep::Failure(ReasonCode::BadUserNameOrPassword);
                }
                let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
                let server_final = format!("v={}", BASE64.encode(server_signature));
                self.authenticated = Some(user);
                AuthStep::Success(Some(Bytes::from(server_final.into_bytes())))
            }
            State::Done => failure,
        }
    }
}

/// The client's side of the exchange, for a client of this crate (a
/// bridge to another broker): from the client-first-bare message it sent,
/// the server-first it got and the password, the client-final message to
/// send and the server-final message to expect.
pub fn client_final(
    password: &[u8],
    client_first_bare: &str,
    server_first: &str,
) -> Option<(String, String)> {
    let nonce = attribute(server_first, 'r')?;
    let salt = BASE64.decode(attribute(server_first, 's')?).ok()?;
    let iterations = attribute(server_first, 'i')?.parse().ok()?;
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
    Some((
        format!("{without_proof},p={}", BASE64.encode(proof)),
        format!("v={}", BASE64.encode(server_signature)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677's example: user "user", password "pencil".
    #[test]
    fn rfc_7677_example() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = Credential::derive(b"pencil", salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let mut exchange = Exchange {
            passwords: None,
            authenticated: None,
            state: State::Challenged {
                credential: Box::new(credential),
                user: "user".to_owned(),
                channel_binding: "biws".to_owned(),
                client_first_bare: client_first_bare.to_owned(),
                server_first: server_first.to_owned(),
                nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
            },
        };
        let final_message =
            format!("{without_proof},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            exchange.step(Some(final_message.as_bytes())),
            AuthStep::Success(Some(Bytes::from_static(
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
            )))
        );
    }

    #[test]
    fn credentials_round_trip_and_bad_ones_are_refused() {
        let credential = Credential::new(b"secret");
        assert_eq!(Credential::decode(&credential.encode()), Some(credential));
        assert_eq!(
            Credential::decode("$scram-sha-256$i=0$AA==$AA==$AA=="),
            None
        );
        assert_eq!(Credential::decode("$argon2id$whatever"), None);
    }
}
