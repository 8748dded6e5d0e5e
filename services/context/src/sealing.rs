//! Sensitive values sealed at rest: a sensitive environment entry's value is encrypted
//! before it is appended, so the log — which anyone allowed to read `OSP_EVENTS` can
//! read — never holds it in clear, and only an instance with the service's seal key can
//! reveal it.
//!
//! The seal is ChaCha20-Poly1305 (ring's, already in the dependency tree through rustls)
//! with a **synthetic nonce**: the first 12 bytes of BLAKE3 keyed with the seal key over
//! the entry's place and value. So the same value sealed for the same place gives the same
//! text, which keeps deciding pure and a resent `set_env` recognisable as the same value;
//! the price, said here, is that two equal values in the same place are seen to be equal.
//! The place (scope and key) is the AEAD's associated data: a sealed value copied to
//! another entry does not open.
//!
//! On the log a sealed value is the string `v1:<key id>:<hex of nonce and ciphertext>`
//! with `sealed: true` beside it; the key id (8 hex digits of BLAKE3 of the key) says
//! which key sealed it, so a reveal with another key says so instead of failing vaguely.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// Bytes of a seal key.
pub const KEY_BYTES: usize = 32;
/// The version of the sealed form.
const VERSION: &str = "v1";

/// The service's seal key.
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; KEY_BYTES],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id())
    }
}

impl PartialEq for SealKey {
    fn eq(&self, other: &SealKey) -> bool {
        self.id() == other.id()
    }
}

/// Why a seal key or a sealed value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    /// The key's text is not 64 hex digits.
    #[error("a seal key is {} hex digits (32 bytes), e.g. from `openssl rand -hex 32`", KEY_BYTES * 2)]
    BadKey,
    /// The value is not in the sealed form.
    #[error("not a sealed value")]
    NotSealed,
    /// Sealed with another key.
    #[error("sealed with key {sealed_with}; this service's key is {ours}")]
    OtherKey {
        /// The key id in the value.
        sealed_with: String,
        /// This service's key id.
        ours: String,
    },
    /// The ciphertext does not open (altered, or sealed for another place).
    #[error("the sealed value does not open: altered, or moved from another entry")]
    Corrupt,
}

impl SealKey {
    /// A key from its 64 hex digits.
    pub fn from_hex(text: &str) -> Result<SealKey, SealError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SealError::BadKey)?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(SealKey { bytes })
    }

    /// A new random key, as 64 hex digits (what `osp dev` keeps for its own server).
    pub fn generate_hex() -> String {
        hex::encode(rand_bytes())
    }

    /// Its id: 8 hex digits of BLAKE3 of the key (not secret).
    pub fn id(&self) -> String {
        blake3::hash(&self.bytes).to_hex()[..8].to_owned()
    }

    /// `value` sealed for the entry `place` (its scope and key).
    pub fn seal(&self, place: &str, value: &str) -> String {
        let nonce = self.nonce(place, value);
        let mut sealed = value.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place.as_bytes()), &mut sealed)
            .expect("sealing a value under 4 GiB cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{VERSION}:{}:{}", self.id(), hex::encode(bytes))
    }

    /// The value `sealed` holds, for the entry `place`.
    pub fn unseal(&self, place: &str, sealed: &str) -> Result<String, SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::NotSealed);
        };
        if key_id != self.id() {
            return Err(SealError::OtherKey { sealed_with: key_id.to_owned(), ours: self.id() });
        }
        let bytes = hex::decode(body).map_err(|_| SealError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut sealed = sealed.to_vec();
        let opened = self
            .aead()
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(opened.to_vec()).map_err(|_| SealError::Corrupt)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.bytes).expect("a 32-byte key"))
    }

    /// The synthetic nonce: keyed BLAKE3 over the place and the value, with a separator
    /// no place contains (a place is a scope and a key, both tokens).
    fn nonce(&self, place: &str, value: &str) -> [u8; NONCE_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.bytes);
        hasher.update(place.as_bytes()).update(b"\n").update(value.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..NONCE_LEN]);
        nonce
    }
}

/// 32 random bytes from the system.
fn rand_bytes() -> [u8; KEY_BYTES] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; KEY_BYTES];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source");
    bytes
}

/// The place a value is sealed for: its scope and key.
pub fn place(scope: &impl std::fmt::Display, key: &str) -> String {
    format!("{scope}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_in_its_place() {
        let sealed = key().seal("global/API_KEY", "sk-123");
        assert!(!sealed.contains("sk-123"));
        assert!(sealed.starts_with(&format!("v1:{}:", key().id())));
        assert_eq!(key().unseal("global/API_KEY", &sealed).unwrap(), "sk-123");
        assert_eq!(key().unseal("global/OTHER", &sealed), Err(SealError::Corrupt));
        let other = SealKey::from_hex(&SealKey::generate_hex()).unwrap();
        assert!(matches!(other.unseal("global/API_KEY", &sealed), Err(SealError::OtherKey { .. })));
        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 2.., "00");
        assert_eq!(key().unseal("global/API_KEY", &tampered), Err(SealError::Corrupt));
        assert_eq!(key().unseal("global/API_KEY", "sk-123"), Err(SealError::NotSealed));
    }

    #[test]
    fn sealing_is_deterministic_per_place_and_value() {
        assert_eq!(key().seal("global/K", "v"), key().seal("global/K", "v"));
        assert_ne!(key().seal("global/K", "v"), key().seal("global/K", "w"));
        assert_ne!(key().seal("global/K", "v"), key().seal("run:r/K", "v"));
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert_eq!(SealKey::from_hex("abc"), Err(SealError::BadKey));
        assert!(SealKey::from_hex(&SealKey::generate_hex()).is_ok());
        assert_ne!(SealKey::generate_hex(), SealKey::generate_hex());
    }
}
