//! Verifies the user's own token on the GDPR endpoints.
//!
//! The keys come from the issuer's OpenID metadata (`jwks_uri`). They are
//! cached; an unknown `kid` (the issuer rotated its keys) triggers a refresh,
//! but at most once per [`MIN_REFRESH_INTERVAL`]: anyone can forge a header
//! with a random `kid`, and that must not turn dormant into a JWKS hammer.
//!
//! Accepted: RS256 only (`none`, HS*, ES* are refused before any key is
//! looked at: "HS256 with the public key as secret" is the classic
//! algorithm-confusion attack), `iss` exactly as configured, `aud` the app's
//! client id, `exp`/`nbf` with five minutes of clock skew, and `auth_time`
//! within `DORMANT_GDPR_MAX_AUTH_AGE_SECS` (B2C guidance: a destructive or
//! revealing request needs a fresh sign-in, forced by the app with
//! `max_age`/`prompt=login`). B2C tokens name their user flow or custom
//! policy in `tfp` or `acr`: with `DORMANT_GDPR_POLICIES`
//! set, only tokens of those policies are accepted, since every user flow
//! of a B2C tenant signs with the same keys for the same audience (a
//! password-reset or sign-up-only flow must not open the endpoints).
//! Entra tokens carry `tid` and verify the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::config::Gdpr;
use crate::ids::ObjectId;

/// Clock skew allowed on `exp`, `nbf` and `auth_time` (CONTRACT: 5 min).
pub const LEEWAY_SECS: u64 = 300;
/// Fewest seconds between two JWKS fetches caused by unknown `kid`s.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Keys are re-read after this long even if every `kid` is known, so a key
/// the issuer withdrew stops verifying within a day.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(24 * 3600);
/// A real ID or access token is 1–3 KiB; anything this large is refused
/// before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Metadata and JWKS documents are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was not accepted. Texts are for logs and error bodies:
/// they never quote the token or its claims.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("the request carries no bearer token")]
    Missing,
    /// Signature, algorithm, issuer, audience, lifetime or subject is wrong.
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    /// Valid, but the user signed in too long ago (or the token does not
    /// say when): the app must force a fresh sign-in.
    #[error("the sign-in is older than {max_age_secs} s; sign in again")]
    TooOld { max_age_secs: u64 },
    /// The issuer's keys could not be read: nothing can be verified now.
    #[error("the token issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// Who the verified token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    /// `oid`, else `sub`: the directory object id.
    pub subject: ObjectId,
    pub auth_time: DateTime<Utc>,
    /// B2C user flow / custom policy (`tfp` or `acr`), if any; for logs.
    pub policy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    auth_time: Option<i64>,
    #[serde(default)]
    tfp: Option<String>,
    #[serde(default)]
    acr: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    jwks_uri: String,
    #[serde(default)]
    issuer: Option<String>,
}

/// A JWKS as the issuer publishes it; keys we cannot use are skipped, not
/// fatal (Entra lists certificates and keys for several algorithms).
#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RsaJwk {
    kty: String,
    kid: String,
    n: String,
    e: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies tokens for one issuer/audience. Cheap to share (`Arc`).
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    metadata_url: Url,
    max_auth_age_secs: u64,
    /// `DORMANT_GDPR_POLICIES`; empty: any policy (or none).
    policies: Vec<String>,
    http: reqwest::Client,
    keys: RwLock<KeyCache>,
    /// Single flight for fetches, and when the last one was attempted.
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Builds the verifier; no network I/O (keys are fetched on first use).
    pub fn new(config: &Gdpr, http: reqwest::Client) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            metadata_url: config.metadata_url.clone(),
            max_auth_age_secs: config.max_auth_age_secs,
            policies: config.policies.clone(),
            http,
            keys: RwLock::new(KeyCache::default()),
            last_fetch: Mutex::new(None),
            min_refresh: MIN_REFRESH_INTERVAL,
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same verifier with another refresh interval (tests).
    pub fn with_min_refresh(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    pub fn max_auth_age_secs(&self) -> u64 {
        self.max_auth_age_secs
    }

    /// How many times the JWKS was fetched (tests, diagnostics).
    pub fn jwks_fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<VerifiedUser, TokenError> {
        let header = header.ok_or(TokenError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(TokenError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
        }
        self.verify(token.trim(), Utc::now()).await
    }

    /// Verifies a compact JWS at time `now`.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedUser, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid("the token is too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("the token is not a signed JWT"))?;
        // Decided on the header before any key is chosen: a key is never
        // used with an algorithm other than the one we expect.
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Invalid("only RS256 tokens are accepted"));
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or(TokenError::Invalid("the token names no signing key"))?;
        let key = self.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            TokenError::Invalid(match e.kind() {
                K::InvalidSignature => "the signature does not verify",
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidIssuer => "the token is from another issuer",
                K::InvalidAudience => "the token is for another audience",
                K::MissingRequiredClaim(_) => "the token lacks a required claim",
                K::InvalidAlgorithm => "only RS256 tokens are accepted",
                _ => "the token could not be verified",
            })
        })?;
        let claims = data.claims;
        let policy = self.policy_of(&claims)?;

        let subject_text = claims
            .oid
            .as_deref()
            .or(claims.sub.as_deref())
            .ok_or(TokenError::Invalid("the token names no subject"))?;
        let subject = ObjectId::parse(subject_text).ok_or(TokenError::Invalid(
            "the token's subject is not a directory object id (B2C: set the subject claim to ObjectID)",
        ))?;

        let too_old = TokenError::TooOld {
            max_age_secs: self.max_auth_age_secs,
        };
        let auth_time = claims
            .auth_time
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .ok_or(too_old)?;
        let age = now.signed_duration_since(auth_time).num_seconds();
        if age < -(LEEWAY_SECS as i64) {
            return Err(TokenError::Invalid("the sign-in time is in the future"));
        }
        if age > (self.max_auth_age_secs + LEEWAY_SECS) as i64 {
            return Err(TokenError::TooOld {
                max_age_secs: self.max_auth_age_secs,
            });
        }
        Ok(VerifiedUser {
            subject,
            auth_time,
            policy,
        })
    }

    /// The token's user flow or policy, checked against the allowed ones.
    ///
    /// B2C writes the policy name into `tfp` or into `acr`, as the user
    /// flow's token compatibility setting says; `tfp` is read first, since
    /// `acr` has another meaning in other issuers' tokens. Names are
    /// compared case-insensitively, as B2C treats them. An Entra token has
    /// no policy name: its `acr` is the authentication context class ("1"
    /// after an ordinary sign-in), compared the same way, so a list of B2C
    /// names refuses every Entra token, and a list holding "1" admits Entra
    /// tokens of that class only.
    fn policy_of(&self, claims: &Claims) -> Result<Option<String>, TokenError> {
        let named = claims
            .tfp
            .as_deref()
            .or(claims.acr.as_deref())
            .map(str::trim)
            .filter(|p| !p.is_empty());
        if self.policies.is_empty() {
            // For logs only: an Entra `acr` ("1") names no policy.
            return Ok(claims.tfp.clone().or(claims
                .acr
                .clone()
                .filter(|a| a.to_ascii_lowercase().starts_with("b2c_"))));
        }
        let named = named.ok_or(TokenError::Invalid(
            "the token names no user flow or policy (tfp or acr)",
        ))?;
        self.policies
            .iter()
            .find(|p| p.eq_ignore_ascii_case(named))
            .map(|p| Some(p.clone()))
            .ok_or(TokenError::Invalid(
                "the token comes from a user flow or policy that may not call these endpoints",
            ))
    }

    /// The key for `kid`, refreshing the cache when allowed.
    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        {
            let cache = self.keys.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < MAX_KEY_AGE);
            if fresh && let Some(k) = cache.keys.get(kid) {
                return Ok(k.clone());
            }
        }
        self.refresh(kid).await?;
        let cache = self.keys.read().await;
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or(TokenError::Invalid("the token's signing key is unknown"))
    }

    /// Fetches the JWKS unless one was fetched (or tried) within the refresh
    /// interval. Concurrent callers wait for one fetch. A failed fetch keeps
    /// the keys we had: an issuer outage must not lock every user out.
    async fn refresh(&self, kid: &str) -> Result<(), TokenError> {
        let mut last = self.last_fetch.lock().await;
        {
            let cache = self.keys.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < MAX_KEY_AGE);
            if fresh && cache.keys.contains_key(kid) {
                return Ok(());
            }
        }
        let have_keys = !self.keys.read().await.keys.is_empty();
        if let Some(at) = *last
            && at.elapsed() < self.min_refresh
        {
            if have_keys {
                return Ok(());
            }
            // Nothing cached: the last fetch failed. Still rate-limited.
            return Err(TokenError::KeysUnavailable(
                "the last attempt failed; retrying later".into(),
            ));
        }
        *last = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "GDPR token signing keys refreshed");
                let mut cache = self.keys.write().await;
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(e) if have_keys => {
                tracing::warn!(error = %e, "cannot refresh the token signing keys; keeping the cached ones");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the token signing keys");
                Err(TokenError::KeysUnavailable(e))
            }
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let metadata: Metadata = self.get_document(self.metadata_url.clone()).await?;
        if let Some(issuer) = &metadata.issuer
            && issuer != &self.issuer
            && !issuer.contains("{tenantid}")
        {
            // Not fatal: Entra's multi-tenant metadata names a template,
            // and the token's `iss` is checked against our setting anyway.
            tracing::warn!(
                "the OpenID metadata names another issuer than DORMANT_GDPR_ISSUER; tokens are checked against the setting"
            );
        }
        let jwks_uri = Url::parse(&metadata.jwks_uri)
            .map_err(|_| "the metadata's jwks_uri is not a URL".to_string())?;
        // The keys decide whom we trust: never over plain HTTP unless the
        // metadata itself was (only possible in unit tests: config demands https).
        if jwks_uri.scheme() != "https" && self.metadata_url.scheme() == "https" {
            return Err("the metadata's jwks_uri is not https".into());
        }
        let jwks: Jwks = self.get_document(jwks_uri).await?;
        let mut keys = HashMap::new();
        for value in jwks.keys {
            let Ok(jwk) = serde_json::from_value::<RsaJwk>(value) else {
                continue;
            };
            let usable = jwk.kty == "RSA"
                && jwk.use_.as_deref().is_none_or(|u| u == "sig")
                && jwk.alg.as_deref().is_none_or(|a| a == "RS256");
            if !usable {
                continue;
            }
            if let Ok(key) = DecodingKey::from_rsa_components(&jwk.n, &jwk.e) {
                keys.insert(jwk.kid, key);
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 signing key".into());
        }
        Ok(keys)
    }

    async fn get_document<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, String> {
        let what = url.path().to_owned();
        let response = self
            .http
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {what}: connection failure ({})", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {what}: HTTP {}", status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("GET {what}: document too large"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {what}: reading the body ({})", e.without_url()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {what}: document too large"));
        }
        serde_json::from_slice(&body).map_err(|_| format!("GET {what}: not the expected JSON"))
    }
}
