//! Sealing secrets with AES-256-GCM before they touch Redis or the database.
//!
//! A sealed value is `1 || nonce (12 bytes) || ciphertext+tag`. The proc and secret
//! names are the associated data, so a sealed value moved to another key fails to open.

use std::io::Write as _;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;

use super::StoreError;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let unreadable = || {
            StoreError::Corrupt(format!(
                "the sealed secret {context} cannot be opened (wrong PROCTOR_SECRETS_KEY or damaged data)"
            ))
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(unreadable());
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        self.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| unreadable())
    }
}

/// Reads the embedded mode's key file, or creates it (mode 0600) with a fresh key.
/// Returns the key and whether it was created.
pub fn load_or_create_key_file(path: &Path) -> Result<([u8; 32], bool), StoreError> {
    let fail = |what: &str, e: std::io::Error| {
        StoreError::Corrupt(format!(
            "cannot {what} the secrets key file {}: {e}",
            path.display()
        ))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = crate::config::parse_secrets_key(&text).map_err(|message| {
                StoreError::Corrupt(format!(
                    "the secrets key file {}: {message}",
                    path.display()
                ))
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail("create the folder of", e))?;
            }
            let key: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| fail("create", e))?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(key);
            file.write_all(encoded.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail("write", e))?;
            Ok((key, true))
        }
        Err(e) => Err(fail("read", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let sealer = Sealer::new(&[3; 32]);
        let sealed = sealer.seal("proc/KEY", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "no plaintext");
        assert_eq!(sealer.open("proc/KEY", &sealed).unwrap(), b"hunter2");
        assert!(
            sealer.open("proc/OTHER", &sealed).is_err(),
            "bound to its context"
        );
        assert!(
            Sealer::new(&[4; 32]).open("proc/KEY", &sealed).is_err(),
            "bound to its key"
        );
        assert_ne!(
            sealer.seal("proc/KEY", b"hunter2"),
            sealed,
            "fresh nonce each time"
        );
    }

    #[test]
    fn the_key_file_is_created_once_with_owner_only_access() {
        let dir = std::env::temp_dir().join(format!("proctor-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("secrets.key");
        let (first, created) = load_or_create_key_file(&path).unwrap();
        assert!(created);
        let (second, created_again) = load_or_create_key_file(&path).unwrap();
        assert!(!created_again);
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
