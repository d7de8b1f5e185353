//! The signed token of a "keep" / "let go" link: HMAC-SHA256 over the case
//! id, the user's object id, the answer and the expiry, URL-safe base64
//! without padding. The token is the whole credential (the endpoint is
//! anonymous: the link travels in a mail), so every field is under the MAC
//! and nothing in it is trusted before the MAC verifies.
//!
//! Layout (bytes): version `1` · answer (`1` keep, `2` let go) · expiry
//! (unix seconds, i64 big-endian) · user object id (16) · case id length
//! (1) · case id (ASCII) · HMAC-SHA256 (32) over a domain label and all of
//! the above. A link is about 115 characters.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::Answer;
use crate::ids::ObjectId;

const VERSION: u8 = 1;
/// Keeps these MACs apart from any other HMAC made with the same key.
const DOMAIN: &[u8] = b"dormant-attest-v1\0";
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 1 + 1 + 8 + 16 + 1;
/// Case ids are `c-<time>-<hex>` (27 characters); room to spare.
const MAX_CASE_LEN: usize = 64;
/// Shorter keys are refused: the key is the only thing between a forger
/// and every account's "keep".
pub const MIN_KEY_LEN: usize = 32;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub case: String,
    pub user: ObjectId,
    pub answer: Answer,
    pub expires: DateTime<Utc>,
}

/// Why a token is refused. None of these says more than the kind: the
/// caller may be a forger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64, too short, an unknown version or layout.
    #[error("the link is not a dormant link")]
    Malformed,
    /// The MAC does not verify: forged, tampered, or another key.
    #[error("the link's signature does not verify")]
    BadSignature,
    /// Signed, but past its expiry (the next destructive step's date).
    #[error("the link has expired")]
    Expired,
}

/// The signing key (`DORMANT_ATTEST_KEY`, or the Key Vault secret named by
/// `DORMANT_ATTEST_KEY_NAME`). Never printed.
#[derive(Clone)]
pub struct AttestKey(SecretString);

impl std::fmt::Debug for AttestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttestKey(…)")
    }
}

impl AttestKey {
    /// `None` when the key is too short to be a key.
    pub fn new(secret: SecretString) -> Option<Self> {
        (secret.expose_secret().len() >= MIN_KEY_LEN).then_some(Self(secret))
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac
    }

    /// The token for `claims`. `None` for a case id that cannot be carried
    /// (not ASCII, or too long): such a case gets no link.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let case = claims.case.as_bytes();
        if case.is_empty() || case.len() > MAX_CASE_LEN || !claims.case.is_ascii() {
            return None;
        }
        let user = uuid::Uuid::parse_str(claims.user.as_str()).ok()?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + case.len() + MAC_LEN);
        bytes.push(VERSION);
        bytes.push(match claims.answer {
            Answer::Keep => 1,
            Answer::LetGo => 2,
        });
        bytes.extend_from_slice(&claims.expires.timestamp().to_be_bytes());
        bytes.extend_from_slice(user.as_bytes());
        bytes.push(case.len() as u8);
        bytes.extend_from_slice(case);
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The claims of `token` if it is ours, untampered, and not expired at
    /// `now`. The MAC is checked (in constant time) before any field is
    /// read.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        if token.len() > 4 * (HEADER_LEN + MAX_CASE_LEN + MAC_LEN) / 3 + 4 {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() < HEADER_LEN + 1 + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag)
            .map_err(|_| TokenError::BadSignature)?;
        // Signed by us: the layout is ours too, but read it defensively.
        if body[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let answer = match body[1] {
            1 => Answer::Keep,
            2 => Answer::LetGo,
            _ => return Err(TokenError::Malformed),
        };
        let secs = i64::from_be_bytes(body[2..10].try_into().expect("8 bytes"));
        let user = uuid::Uuid::from_slice(&body[10..26]).map_err(|_| TokenError::Malformed)?;
        let len = usize::from(body[26]);
        let case = &body[HEADER_LEN..];
        if case.len() != len {
            return Err(TokenError::Malformed);
        }
        let case = std::str::from_utf8(case)
            .ok()
            .filter(|c| c.is_ascii())
            .ok_or(TokenError::Malformed)?;
        let expires = DateTime::from_timestamp(secs, 0).ok_or(TokenError::Malformed)?;
        let user = ObjectId::parse(&user.to_string()).ok_or(TokenError::Malformed)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            case: case.to_owned(),
            user,
            answer,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> AttestKey {
        AttestKey::new(SecretString::from(text.to_owned())).expect("long enough")
    }

    fn k() -> AttestKey {
        key("attest-key-for-unit-tests-0123456789abcdef")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    }

    fn claims(answer: Answer) -> Claims {
        Claims {
            case: "c-20261101T020000Z-0a1b2c3d".into(),
            user: ObjectId::parse("6b3f2c1e-0000-4000-8000-000000000001").expect("id"),
            answer,
            expires: at("2026-11-15T02:00:00Z"),
        }
    }

    fn now() -> DateTime<Utc> {
        at("2026-11-02T09:00:00Z")
    }

    /// The token's bytes, changed by `f`, re-encoded (the MAC left as is).
    fn altered(token: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut bytes = URL_SAFE_NO_PAD.decode(token).expect("b64");
        f(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_token_round_trips_and_is_compact_and_url_safe() {
        for answer in [Answer::Keep, Answer::LetGo] {
            let c = claims(answer);
            let t = k().sign(&c).expect("signs");
            assert!(t.len() < 120, "{} characters", t.len());
            assert!(
                t.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "{t}"
            );
            assert_eq!(k().verify(&t, now()), Ok(c));
        }
        // The two answers of one case are different tokens.
        assert_ne!(
            k().sign(&claims(Answer::Keep)),
            k().sign(&claims(Answer::LetGo))
        );
    }

    #[test]
    fn a_tampered_answer_is_refused() {
        let t = k().sign(&claims(Answer::LetGo)).expect("signs");
        let keep = altered(&t, |b| b[1] = 1);
        assert_eq!(k().verify(&keep, now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_tampered_case_or_user_or_expiry_is_refused() {
        let t = k().sign(&claims(Answer::Keep)).expect("signs");
        let other_user = altered(&t, |b| b[25] ^= 1);
        let other_case = altered(&t, |b| {
            let last_case_byte = b.len() - MAC_LEN - 1;
            b[last_case_byte] = b'f';
        });
        let later = altered(&t, |b| b[5] = b[5].wrapping_add(1));
        for forged in [other_user, other_case, later] {
            assert_eq!(k().verify(&forged, now()), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let t = key("another-key-of-another-deployment-000000")
            .sign(&claims(Answer::Keep))
            .expect("signs");
        assert_eq!(k().verify(&t, now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_expired_token_is_refused_from_its_expiry_on() {
        let c = claims(Answer::Keep);
        let t = k().sign(&c).expect("signs");
        let just_before = c.expires - chrono::Duration::seconds(1);
        assert!(k().verify(&t, just_before).is_ok());
        assert_eq!(k().verify(&t, c.expires), Err(TokenError::Expired));
        assert_eq!(
            k().verify(&t, c.expires + chrono::Duration::days(30)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn malformed_base64_and_garbage_are_refused() {
        for garbage in [
            "",
            "not base64 at all!",
            "%2e%2e%2f",
            "====",
            "AAAA",
            &"A".repeat(5000),
            // Standard base64 with padding is not the link alphabet.
            "ab+/cd==",
        ] {
            assert_eq!(
                k().verify(garbage, now()),
                Err(TokenError::Malformed),
                "{garbage:.40}"
            );
        }
        // Random bytes of a plausible length: the MAC refuses them.
        let random = URL_SAFE_NO_PAD.encode([7u8; 90]);
        assert_eq!(k().verify(&random, now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_truncated_token_is_refused() {
        let t = k().sign(&claims(Answer::Keep)).expect("signs");
        for cut in [1, 2, 10, 43, t.len() / 2, t.len() - 1] {
            let short = &t[..t.len() - cut];
            assert!(
                k().verify(short, now()).is_err(),
                "cut {cut} characters still verifies"
            );
        }
        // Bytes cut off the end (a mail client eating the tail).
        let short = altered(&t, |b| b.truncate(b.len() - 1));
        assert!(k().verify(&short, now()).is_err());
    }

    #[test]
    fn short_keys_are_refused_and_the_key_is_never_printed() {
        assert!(AttestKey::new(SecretString::from("short".to_owned())).is_none());
        let shown = format!("{:?}", k());
        assert!(!shown.contains("attest-key"), "{shown}");
    }
}
