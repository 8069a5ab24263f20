//! The SCRAM-SHA-256 credential a password file keeps for each user (RFC
//! 5802 section 3): the salted keys, never the password. Made by `petrel
//! passwd` from the password, written beside the user's hash, and checked
//! against by the [`super::scram`] method.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// PBKDF2 iterations for new credentials (RFC 7677 asks for at least 4096).
pub const ITERATIONS: u32 = 4096;

/// What the broker keeps for a user: never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // An HMAC key may be of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Credential {
    /// The credential for `password`, with a new random salt.
    pub fn new(password: &[u8]) -> Credential {
        let mut salt = vec![0u8; 16];
        OsRng.fill_bytes(&mut salt);
        Credential::derive(password, salt, ITERATIONS)
    }

    /// A credential for a user the broker does not know: a salt derived
    /// from the name with a key made at start-up (the same salt each time
    /// the name is asked about, like a real user's), and random keys.
    pub fn unknown(user: &str) -> Credential {
        static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            secret
        });
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        OsRng.fill_bytes(&mut stored_key);
        OsRng.fill_bytes(&mut server_key);
        Credential {
            iterations: ITERATIONS,
            salt: hmac(secret, user.as_bytes())[..16].to_vec(),
            stored_key,
            server_key,
        }
    }

    /// The credential for `password` with this salt and iteration count.
    pub fn derive(password: &[u8], salt: Vec<u8>, iterations: u32) -> Credential {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Credential {
            iterations,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The credential as the password file writes it:
    /// `$scram-sha-256$i=4096$<salt>$<stored key>$<server key>` (base64).
    pub fn encode(&self) -> String {
        format!(
            "$scram-sha-256$i={}${}${}${}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Reads what [`Credential::encode`] wrote.
    pub fn decode(text: &str) -> Option<Credential> {
        let mut parts = text.strip_prefix("$scram-sha-256$")?.split('$');
        let iterations = parts.next()?.strip_prefix("i=")?.parse().ok()?;
        let salt = BASE64.decode(parts.next()?).ok()?;
        let stored_key = BASE64.decode(parts.next()?).ok()?.try_into().ok()?;
        let server_key = BASE64.decode(parts.next()?).ok()?.try_into().ok()?;
        if parts.next().is_some() || iterations == 0 {
            return None;
        }
        Some(Credential {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}
