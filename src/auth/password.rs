//! The password file: one `username:hash` line per user, the hash a PHC
//! string (argon2id for new entries; PBKDF2-SHA512 is accepted too), as
//! `petrel passwd` writes it, or any line `mosquitto_passwd` writes
//! (`$6$`, `$7$`, Mosquitto 2.1's argon2id: [`super::mosquitto_hash`]); after the hash and a space, the user's
//! SCRAM-SHA-256 credential when there is one (`petrel passwd` writes
//! both). Blank lines and `#` comments are allowed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::credential::Credential;
use super::mosquitto_hash::MosquittoHash;

/// A line's hash: a PHC string (what `petrel passwd` writes), or one of
/// the forms `mosquitto_passwd` writes.
enum Hash<'a> {
    Phc(PasswordHash<'a>),
    Mosquitto(MosquittoHash),
}

impl<'a> Hash<'a> {
    fn parse(text: &'a str) -> Result<Hash<'a>, String> {
        // A PHC string the parser takes first; Mosquitto's `$6$`/`$7$`,
        // and its argon2id lines whose 64-byte salt the PHC format's
        // 64-character limit refuses, after.
        let phc = PasswordHash::new(text);
        if let Ok(hash) = phc {
            return Ok(Hash::Phc(hash));
        }
        match MosquittoHash::parse(text)? {
            Some(hash) => Ok(Hash::Mosquitto(hash)),
            None => Err(match phc {
                Err(error) => format!("not a PHC hash nor a mosquitto_passwd one: {error}"),
                Ok(_) => "not a password hash".to_owned(),
            }),
        }
    }
}

/// An argon2id hash (of nothing anyone types) to check unknown users
/// against.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"\0 no user \0", &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// The users, their password hashes and SCRAM credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    hash: String,
    scram: Option<Credential>,
}

impl PasswordFile {
    /// Reads and checks a password file; an error names the line.
    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        PasswordFile::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<PasswordFile, String> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {number}: expected `username:hash`"));
            };
            if user.is_empty() {
                return Err(format!("line {number}: empty user name"));
            }
            let (hash, scram) = match hash.split_once(' ') {
                Some((hash, scram)) => {
                    let credential = Credential::decode(scram.trim()).ok_or_else(|| {
                        format!("line {number}: user {user}: not a SCRAM-SHA-256 credential")
                    })?;
                    (hash, Some(credential))
                }
                None => (hash, None),
            };
            Hash::parse(hash).map_err(|error| format!("line {number}: user {user}: {error}"))?;
            let entry = Entry {
                hash: hash.to_owned(),
                scram,
            };
            if users.insert(user.to_owned(), entry).is_some() {
                return Err(format!("line {number}: user {user} appears twice"));
            }
        }
        Ok(PasswordFile { users })
    }

    /// Whether `password` is `user`'s. Slow on purpose (argon2id or
    /// PBKDF2): run it off the async threads.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(entry) = self.users.get(user) else {
            // As long as a known user's check, so that the time taken does
            // not tell which names exist.
            let _ = Hash::parse(dummy_hash()).map(|hash| match hash {
                Hash::Phc(hash) => hash
                    .verify_password(&[&Argon2::default()], password)
                    .is_ok(),
                Hash::Mosquitto(hash) => hash.verify(password),
            });
            return false;
        };
        match Hash::parse(&entry.hash) {
            Ok(Hash::Phc(hash)) => {
                let verifiers: [&dyn PasswordVerifier; 2] = [&Argon2::default(), &pbkdf2::Pbkdf2];
                hash.verify_password(&verifiers, password).is_ok()
            }
            Ok(Hash::Mosquitto(hash)) => hash.verify(password),
            Err(_) => false,
        }
    }

    /// Whether `user`'s entry is in one of `mosquitto_passwd`'s forms (an
    /// upgrade to argon2id and SCRAM needs their password).
    pub fn is_foreign(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|entry| matches!(Hash::parse(&entry.hash), Ok(Hash::Mosquitto(_))))
    }

    /// Adds `user` or changes their password (hashed with argon2id).
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), String> {
        if user.is_empty()
            || user.starts_with('#')
            || user.contains(':')
            || user.contains(char::is_whitespace)
        {
            return Err(format!(
                "user name {user:?} must be non-empty, not start with `#`, and hold no `:` or spaces"
            ));
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password, &salt)
            .map_err(|error| format!("cannot hash the password: {error}"))?;
        let entry = Entry {
            hash: hash.to_string(),
            scram: Some(Credential::new(password)),
        };
        self.users.insert(user.to_owned(), entry);
        Ok(())
    }

    /// `user`'s SCRAM-SHA-256 credential, if the file has one.
    pub fn scram(&self, user: &str) -> Option<&Credential> {
        self.users.get(user)?.scram.as_ref()
    }

    /// Removes `user`; true if they were there.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Whether `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Writes the file atomically (a new file renamed over the old one).
    /// A new file is readable by its owner only; a file rewritten keeps
    /// its owner, group and mode (`root:petrel 0640`, so that the service
    /// can read it, stays so).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        #[cfg(unix)]
        let kept = std::fs::metadata(path).ok().map(|meta| {
            use std::os::unix::fs::MetadataExt;
            (meta.uid(), meta.gid(), meta.mode() & 0o7777)
        });
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = |options: &std::fs::OpenOptions| -> std::io::Result<()> {
            let mut file = options.open(&temporary)?;
            for (user, entry) in &self.users {
                match &entry.scram {
                    Some(scram) => writeln!(file, "{user}:{} {}", entry.hash, scram.encode())?,
                    None => writeln!(file, "{user}:{}", entry.hash)?,
                }
            }
            #[cfg(unix)]
            if let Some((uid, gid, mode)) = kept {
                use std::os::unix::fs::PermissionsExt;
                // As the file's owner or root: an owner that is not root
                // keeps its own user and group anyway.
                let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write(&options).map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            format!("cannot write {}: {error}", path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A rewritten file keeps the mode it was given (0640 for the service's
    // group to read it); a new one is its owner's only.
    #[cfg(unix)]
    #[test]
    fn a_rewritten_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("petrel-passwd-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwords");
        let _ = std::fs::remove_file(&path);
        let mut file = PasswordFile::default();
        file.set("alice", b"secret").unwrap();
        file.save(&path).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        file.set("bob", b"other").unwrap();
        file.save(&path).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert!(PasswordFile::load(&path).unwrap().contains("bob"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn argon2id_and_pbkdf2_hashes_verify() {
        let mut file = PasswordFile::default();
        file.set("alice", b"correct horse").unwrap();
        assert!(file.verify("alice", b"correct horse"));
        assert!(!file.verify("alice", b"wrong"));
        assert!(!file.verify("bob", b"correct horse"));
        let salt = SaltString::generate(&mut OsRng);
        let pbkdf2_hash = pbkdf2::Pbkdf2
            .hash_password_customized(
                b"battery",
                Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 64,
                },
                &salt,
            )
            .unwrap();
        let text = format!("# users\n\nbob:{pbkdf2_hash}\n");
        let parsed = PasswordFile::parse(&text).unwrap();
        assert!(parsed.verify("bob", b"battery"));
        assert!(!parsed.verify("bob", b"staple"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(PasswordFile::parse("alice\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(PasswordFile::parse("\nalice:plaintext\n")
            .unwrap_err()
            .contains("line 2"));
        let mut file = PasswordFile::default();
        assert!(file.set("a:b", b"x").is_err());
        assert!(file.set("#admin", b"x").is_err());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("petrel-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let mut file = PasswordFile::default();
        file.set("carol", b"pw").unwrap();
        file.save(&path).unwrap();
        let loaded = PasswordFile::load(&path).unwrap();
        assert!(loaded.verify("carol", b"pw"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
