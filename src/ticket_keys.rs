//! Session ticket keys read from a file, so that replicas behind one address resume each
//! other's TLS sessions (nginx's `ssl_session_ticket_key`, HAProxy's `tls-ticket-keys`).
//!
//! Without a file each process seals tickets with a random key of its own (`tls::ticketer`):
//! a client that resumed on one replica and lands on another does a full handshake there.
//! With one, every replica given the same file opens every ticket any of them sealed.
//!
//! The file holds one or more keys of 80 bytes each, as nginx reads them (`openssl rand 80`):
//! the first 16 bytes name the key and travel in clear at the head of each ticket, so the
//! right key is found without trying each; the other 64 are the secret. The first key seals,
//! every key opens. Rotation without a full handshake for anyone: add the next key at the end
//! (every replica can open its tickets before any seals with it), then, once every replica has
//! the file, move it to the front, and drop the oldest after a ticket lifetime.
//!
//! A ticket is `name (16) | nonce (12) | sealed(issued at, 8 bytes | session) | tag (16)`,
//! sealed with AES-256-GCM-SIV under a key derived from the secret. GCM-SIV rather than GCM
//! because the nonces are random and a key may seal for as long as an operator leaves it in
//! the file: a repeated nonce costs GCM its key, GCM-SIV only the fact that two tickets carried
//! the same session. The issue time is inside, so a ticket older than its lifetime is refused
//! whatever keys the file still holds (rustls checks a ticket's age only for early data).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM_SIV, NONCE_LEN};
use aws_lc_rs::hkdf;

/// One key in the file: its name, then its secret.
pub const KEY_LEN: usize = 80;
const NAME_LEN: usize = 16;
const ISSUED_LEN: usize = 8;
const TAG_LEN: usize = 16;
const SECRET_LEN: usize = 32;

/// How long a ticket opens after it was sealed, and the lifetime clients are told: 12 hours,
/// as rustls' own ticketer (a key rotated every 6 hours, the one before kept).
pub const LIFETIME_SECS: u32 = 12 * 60 * 60;

/// How far ahead of this replica's clock another replica's may be, for its tickets to open.
const CLOCK_SKEW_SECS: u64 = 5 * 60;

#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("cannot read ticket key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds {len} bytes; a ticket key file holds one or more keys of {KEY_LEN} bytes \
         each (`openssl rand {KEY_LEN} > file`)"
    )]
    Size { path: PathBuf, len: usize },
    #[error("{path}: key {index} is all zero bytes, not random ones")]
    Zero { path: PathBuf, index: usize },
    #[error("{path}: keys {first} and {second} have the same name (their first 16 bytes)")]
    SameName {
        path: PathBuf,
        first: usize,
        second: usize,
    },
    #[error("{path}: cannot set up key {index}")]
    Crypto { path: PathBuf, index: usize },
}

/// A ticket key file as `check-config` and the admin `/config` show it: no secret, only the
/// start of the sealing key's name, which every ticket carries in clear anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketKeysInfo {
    pub path: PathBuf,
    pub keys: usize,
    /// The first 4 bytes of the sealing key's name, in hex.
    pub sealing: String,
}

/// The keys of one file; the first seals. What rustls calls a ticketer.
pub struct TicketKeys {
    path: PathBuf,
    keys: Vec<TicketKey>,
}

struct TicketKey {
    name: [u8; NAME_LEN],
    aead: RandomizedNonceKey,
}

impl TicketKeys {
    /// Reads and checks the keys at `path`.
    pub fn load(path: &Path) -> Result<TicketKeys, TicketKeyError> {
        let bytes = std::fs::read(path).map_err(|source| TicketKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        TicketKeys::from_bytes(path, &bytes)
    }

    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TicketKeys, TicketKeyError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(KEY_LEN) {
            return Err(TicketKeyError::Size {
                path: path.to_owned(),
                len: bytes.len(),
            });
        }
        let mut keys: Vec<TicketKey> = Vec::with_capacity(bytes.len() / KEY_LEN);
        for (index, record) in bytes.chunks_exact(KEY_LEN).enumerate() {
            if record.iter().all(|&b| b == 0) {
                return Err(TicketKeyError::Zero {
                    path: path.to_owned(),
                    index,
                });
            }
            let (name, secret) = record.split_at(NAME_LEN);
            if let Some(first) = keys.iter().position(|k| k.name == name) {
                return Err(TicketKeyError::SameName {
                    path: path.to_owned(),
                    first,
                    second: index,
                });
            }
            let crypto = || TicketKeyError::Crypto {
                path: path.to_owned(),
                index,
            };
            let aead = RandomizedNonceKey::new(&AES_256_GCM_SIV, &derive(name, secret))
                .map_err(|_| crypto())?;
            keys.push(TicketKey {
                name: name.try_into().expect("split at NAME_LEN"),
                aead,
            });
        }
        Ok(TicketKeys {
            path: path.to_owned(),
            keys,
        })
    }

    /// What an operator may see of the file, to check that replicas agree.
    pub fn info(&self) -> TicketKeysInfo {
        TicketKeysInfo {
            path: self.path.clone(),
            keys: self.keys.len(),
            sealing: self.keys[0].name[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    fn seal(&self, session: &[u8], now: u64) -> Option<Vec<u8>> {
        let key = &self.keys[0];
        // Sealed in place behind the name and the nonce's room: one allocation a ticket.
        let head = NAME_LEN + NONCE_LEN;
        let mut ticket = Vec::with_capacity(head + ISSUED_LEN + session.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&[0; NONCE_LEN]);
        ticket.extend_from_slice(&now.to_be_bytes());
        ticket.extend_from_slice(session);
        let (nonce, tag) = key
            .aead
            .seal_in_place_separate_tag(Aad::from(&key.name), &mut ticket[head..])
            .ok()?;
        ticket[NAME_LEN..head].copy_from_slice(nonce.as_ref());
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn open(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + ISSUED_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut plain = sealed.to_vec();
        let opened = key
            .aead
            .open_in_place(nonce, Aad::from(&key.name), &mut plain)
            .ok()?
            .len();
        plain.truncate(opened);
        let issued = u64::from_be_bytes(plain[..ISSUED_LEN].try_into().ok()?);
        let fresh = issued <= now + CLOCK_SKEW_SECS
            && now.saturating_sub(issued) <= u64::from(LIFETIME_SECS);
        plain.drain(..ISSUED_LEN);
        fresh.then_some(plain)
    }
}

/// The AEAD key: HKDF-SHA256 of the 64 secret bytes, salted with the key's name, so that no
/// part of the file is used as a cipher key as it is.
fn derive(name: &[u8], secret: &[u8]) -> [u8; SECRET_LEN] {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            SECRET_LEN
        }
    }
    let mut out = [0; SECRET_LEN];
    hkdf::Salt::new(hkdf::HKDF_SHA256, name)
        .extract(secret)
        .expand(&[b"sessiongate session ticket v1"], Len)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 yields 32 bytes");
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, unix_now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, unix_now())
    }
}

/// The path and how many keys; never the keys.
impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("path", &self.path)
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// Keys numbered `ids`, each 80 bytes of its number and position.
    fn keys(ids: &[u8]) -> TicketKeys {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| (0..KEY_LEN as u8).map(move |i| id.wrapping_mul(31) ^ i))
            .collect();
        TicketKeys::from_bytes(Path::new("keys"), &bytes).unwrap()
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let session = b"resumption secret and the rest".as_slice();
        let one = keys(&[1]);
        let ticket = one.seal(session, NOW).unwrap();
        // The key's name leads the ticket; the session is not in it as it is.
        assert_eq!(ticket[..NAME_LEN], one.keys[0].name);
        assert!(!ticket.windows(session.len()).any(|w| w == session));
        // Rotation: the next key added behind, then moved to the front.
        assert_eq!(keys(&[1, 2]).open(&ticket, NOW).as_deref(), Some(session));
        assert_eq!(keys(&[2, 1]).open(&ticket, NOW).as_deref(), Some(session));
        let from_two = keys(&[2, 1]).seal(session, NOW).unwrap();
        assert_eq!(one.open(&from_two, NOW), None);
        // A file without the key opens nothing it sealed.
        assert_eq!(keys(&[3]).open(&ticket, NOW), None);
    }

    #[test]
    fn a_changed_or_cut_ticket_does_not_open() {
        let one = keys(&[1]);
        let ticket = one.seal(b"session", NOW).unwrap();
        for i in 0..ticket.len() {
            let mut changed = ticket.clone();
            changed[i] ^= 0x01;
            assert_eq!(one.open(&changed, NOW), None, "byte {i}");
        }
        for len in 0..ticket.len() {
            assert_eq!(one.open(&ticket[..len], NOW), None, "length {len}");
        }
    }

    #[test]
    fn a_ticket_opens_for_its_lifetime_and_not_after() {
        let one = keys(&[1]);
        let ticket = one.seal(b"session", NOW).unwrap();
        let lifetime = u64::from(LIFETIME_SECS);
        assert!(one.open(&ticket, NOW + lifetime).is_some());
        assert!(one.open(&ticket, NOW + lifetime + 1).is_none());
        // Sealed by a replica whose clock is a little ahead: opens; far ahead: not.
        assert!(one.open(&ticket, NOW - CLOCK_SKEW_SECS).is_some());
        assert!(one.open(&ticket, NOW - CLOCK_SKEW_SECS - 1).is_none());
    }

    #[test]
    fn two_tickets_of_one_session_differ() {
        let one = keys(&[1]);
        assert_ne!(one.seal(b"session", NOW), one.seal(b"session", NOW));
    }

    #[test]
    fn files_that_are_not_keys_are_refused() {
        let path = Path::new("/etc/sg/ticket.keys");
        let err = |bytes: &[u8]| TicketKeys::from_bytes(path, bytes).unwrap_err().to_string();
        assert!(err(&[]).contains("holds 0 bytes"), "{}", err(&[]));
        // nginx's AES-128 form and a key with a newline after it.
        assert!(err(&[7; 48]).contains("holds 48 bytes"));
        assert!(err(&[7; 81]).contains("`openssl rand 80 > file`"));
        let mut two = vec![7u8; KEY_LEN];
        two.extend_from_slice(&[0; KEY_LEN]);
        assert!(
            err(&two).contains("key 1 is all zero bytes"),
            "{}",
            err(&two)
        );
        let mut same_name = vec![7u8; KEY_LEN];
        same_name.extend_from_slice(&[7; NAME_LEN]);
        same_name.extend_from_slice(&[9; KEY_LEN - NAME_LEN]);
        assert!(err(&same_name).contains("keys 0 and 1 have the same name"));
        assert!(err(&two).starts_with("/etc/sg/ticket.keys"));
        let missing = TicketKeys::load(Path::new("/nonexistent/ticket.keys"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read ticket key file /nonexistent/ticket.keys"));
    }

    #[test]
    fn debug_and_info_show_no_secret() {
        let both = keys(&[1, 2]);
        assert_eq!(
            format!("{both:?}"),
            "TicketKeys { path: \"keys\", keys: 2 }"
        );
        // Key 1's name starts 31 ^ 0, 31 ^ 1, ...
        assert_eq!(both.info().sealing, "1f1e1d1c");
        assert_eq!(both.info().keys, 2);
    }
}
