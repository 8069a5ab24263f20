//! The password hashes `mosquitto_passwd` writes, read as they are so that
//! a Mosquitto password file works unchanged:
//!
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (both
//!   base64, a 12-byte salt), Mosquitto 1.6's default;
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512, Mosquitto 2.0's
//!   default (101 iterations, 12-byte salt, 64-byte hash);
//! - `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH` with a salt longer than the
//!   PHC string format's 64 characters (Mosquitto 2.1 uses 64 bytes),
//!   computed with argon2's own API.
//!
//! Every comparison is in constant time. The costs a file names are
//! bounded, so that a file cannot make each login take unbounded time or
//! memory.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Most PBKDF2 iterations a `$7$` line may ask for.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Most argon2 memory (KiB) a line may ask for: 1 GiB.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// Most argon2 passes a line may ask for.
pub const MAX_ARGON2_PASSES: u32 = 64;
/// Longest salt or hash a line may carry, in bytes.
const MAX_BYTES: usize = 1024;

/// A Mosquitto password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MosquittoHash {
    /// `$6$`: SHA-512 (password, salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$argon2id$` with a salt the PHC parser refuses.
    Argon2id {
        memory_kib: u32,
        passes: u32,
        lanes: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// Base64 with or without padding, bounded.
fn decode(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_BYTES * 2 {
        return Err("too long".to_owned());
    }
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| "not base64".to_owned())?;
    if bytes.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(bytes)
}

impl MosquittoHash {
    /// Parses a hash in one of Mosquitto's forms; `Ok(None)` if `text` is
    /// in none of them (a PHC string for the PHC parser, say).
    pub fn parse(text: &str) -> Result<Option<MosquittoHash>, String> {
        if let Some(rest) = text.strip_prefix("$6$") {
            let (salt, hash) = rest.split_once('$').ok_or("a $6$ hash is $6$SALT$HASH")?;
            let hash = decode(hash).map_err(|e| format!("$6$ hash: {e}"))?;
            if hash.len() != 64 {
                return Err("a $6$ hash is 64 bytes".to_owned());
            }
            return Ok(Some(MosquittoHash::Sha512 {
                salt: decode(salt).map_err(|e| format!("$6$ salt: {e}"))?,
                hash,
            }));
        }
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a $7$ hash is $7$ITERATIONS$SALT$HASH".to_owned());
            };
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| "$7$: the iteration count is not a number")?;
            if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                return Err(format!(
                    "$7$: {iterations} iterations (1 to {MAX_PBKDF2_ITERATIONS})"
                ));
            }
            let hash = decode(hash).map_err(|e| format!("$7$ hash: {e}"))?;
            // mosquitto_passwd writes (and Mosquitto accepts) 64 bytes: a
            // shorter one would match guesses by chance.
            if hash.len() != 64 {
                return Err("a $7$ hash is 64 bytes".to_owned());
            }
            return Ok(Some(MosquittoHash::Pbkdf2 {
                iterations,
                salt: decode(salt).map_err(|e| format!("$7$ salt: {e}"))?,
                hash,
            }));
        }
        if let Some(rest) = text.strip_prefix("$argon2id$") {
            return argon2id(rest).map(Some);
        }
        Ok(None)
    }

    /// Whether `password` hashes to this (in constant time).
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            MosquittoHash::Sha512 { salt, .. } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                digest.finalize().to_vec()
            }
            MosquittoHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out
            }
            MosquittoHash::Argon2id {
                memory_kib,
                passes,
                lanes,
                salt,
                hash,
            } => {
                let Ok(params) =
                    argon2::Params::new(*memory_kib, *passes, *lanes, Some(hash.len()))
                else {
                    return false;
                };
                let argon2 = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = vec![0u8; hash.len()];
                if argon2.hash_password_into(password, salt, &mut out).is_err() {
                    return false;
                }
                out
            }
        };
        let expected = match self {
            MosquittoHash::Sha512 { hash, .. }
            | MosquittoHash::Pbkdf2 { hash, .. }
            | MosquittoHash::Argon2id { hash, .. } => hash,
        };
        computed.ct_eq(expected).into()
    }
}

/// `v=19$m=M,t=T,p=P$SALT$HASH`, after `$argon2id$`.
fn argon2id(rest: &str) -> Result<MosquittoHash, String> {
    let mut parts = rest.split('$');
    let (Some(version), Some(params), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("an argon2id hash is $argon2id$v=19$m=M,t=T,p=P$SALT$HASH".to_owned());
    };
    if version != "v=19" {
        return Err(format!("argon2id: version {version:?} (only v=19)"));
    }
    let (mut memory_kib, mut passes, mut lanes) = (None, None, None);
    for param in params.split(',') {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| format!("argon2id: parameter {param:?}"))?;
        let value: u32 = value
            .parse()
            .map_err(|_| format!("argon2id: parameter {param:?}"))?;
        match key {
            "m" => memory_kib = Some(value),
            "t" => passes = Some(value),
            "p" => lanes = Some(value),
            _ => return Err(format!("argon2id: unknown parameter {key:?}")),
        }
    }
    let (Some(memory_kib), Some(passes), Some(lanes)) = (memory_kib, passes, lanes) else {
        return Err("argon2id: m, t and p are all needed".to_owned());
    };
    if memory_kib > MAX_ARGON2_MEMORY_KIB || passes > MAX_ARGON2_PASSES {
        return Err(format!(
            "argon2id: m={memory_kib}, t={passes} over the bounds (m up to \
             {MAX_ARGON2_MEMORY_KIB}, t up to {MAX_ARGON2_PASSES})"
        ));
    }
    let hash = decode(hash).map_err(|e| format!("argon2id hash: {e}"))?;
    if hash.len() < 16 {
        return Err("an argon2id hash of fewer than 16 bytes".to_owned());
    }
    argon2::Params::new(memory_kib, passes, lanes, Some(hash.len()))
        .map_err(|error| format!("argon2id: {error}"))?;
    Ok(MosquittoHash::Argon2id {
        memory_kib,
        passes,
        lanes,
        salt: decode(salt).map_err(|e| format!("argon2id salt: {e}"))?,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines `mosquitto_passwd` (2.0) wrote: alice with `-H sha512-pbkdf2`
    // (the default), bob with `-H sha512`.
    #[test]
    fn mosquitto_passwd_lines_verify() {
        let pbkdf2 = "$7$101$DbipAsw7ZzP/yRWK$icSzUwHxUgjPIDrEKjd7aKz3IKI4ce66V6KF6irs8Qv1FMW9UCqUovJkALZ49efK1QWhUTA4vX7/oRI8TdDiog==";
        let sha512 = "$6$GlDPl0N/XS55e+xj$l8PuiPfpZjNgVXtF+l8rs15PC8qpQU04z8uddagSH+j5CrgZIYkq1HSS1BpYRHS+IWwVzLIQNYYzjVkNgPS1QQ==";
        let alice = MosquittoHash::parse(pbkdf2).unwrap().unwrap();
        assert!(alice.verify(b"secret1"));
        assert!(!alice.verify(b"secret2"));
        let bob = MosquittoHash::parse(sha512).unwrap().unwrap();
        assert!(bob.verify(b"secret2"));
        assert!(!bob.verify(b"secret1"));
    }

    // An argon2id line with a 64-byte salt, made with argon2's own API the
    // way Mosquitto 2.1 makes it.
    #[test]
    fn argon2id_with_a_64_byte_salt_verifies() {
        let salt = [7u8; 64];
        let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap();
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut hash = [0u8; 32];
        argon2
            .hash_password_into(b"letmein", &salt, &mut hash)
            .unwrap();
        let line = format!(
            "$argon2id$v=19$m=19456,t=2,p=1${}${}",
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(hash)
        );
        let parsed = MosquittoHash::parse(&line).unwrap().unwrap();
        assert!(parsed.verify(b"letmein"));
        assert!(!parsed.verify(b"letmeout"));
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for (line, why) in [
            ("$7$0$AAAA$AAAA", "iterations"),
            ("$7$101$AAAA$AQ==", "64 bytes"),
            ("$7$99999999999$AAAA$AAAA", "not a number"),
            ("$7$101$AAAA", "$7$ITERATIONS"),
            ("$6$***$l8PuiPfpZjNgVXtF+l8rs15PC8qpQU04z8uddagSH+j5CrgZIYkq1HSS1BpYRHS+IWwVzLIQNYYzjVkNgPS1QQ==", "not base64"),
            ("$6$AAAA$AAAA", "64 bytes"),
            ("$argon2id$v=19$m=99999999,t=2,p=1$AAAA$AAAA", "bounds"),
            ("$argon2id$v=16$m=1024,t=2,p=1$AAAA$AAAA", "version"),
        ] {
            let error = MosquittoHash::parse(line).unwrap_err();
            assert!(error.contains(why), "{line}: {error}");
        }
        assert_eq!(
            MosquittoHash::parse("$argon2i$v=19$m=1,t=1,p=1$a$b").unwrap(),
            None
        );
    }
}
