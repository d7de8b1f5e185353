//! RS256 tokens signed with a generated key, and the key as a JWK: what a
//! B2C or Entra issuer hands out, for the GDPR tests and benchmark.
//! Included by path from `tests/it/gdpr.rs` and `benches/gdpr.rs`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// A signing key and its JWK.
pub struct Signer {
    key: RsaKeyPair,
    /// The key's `kid`, in the header of every [`Signer::token`].
    kid: String,
    pub n: String,
    pub e: String,
}

impl Signer {
    pub fn new(kid: &str) -> Self {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
        let public = key.public_key();
        let n = B64.encode(public.modulus().big_endian_without_leading_zero());
        let e = B64.encode(public.exponent().big_endian_without_leading_zero());
        Self {
            key,
            kid: kid.to_owned(),
            n,
            e,
        }
    }

    /// The public key as a JWKS entry under `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": self.n, "e": self.e})
    }

    /// Signs `claims` under any `header` (the attack tests forge some).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("sign");
        format!("{input}.{}", B64.encode(sig))
    }

    /// A well-formed RS256 token under this key's `kid`.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}
