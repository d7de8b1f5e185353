//! The token authority (client credentials) and the Key Vault secret endpoint.
//!
//! Shapes follow Microsoft identity platform docs: a token answer is
//! `{token_type, expires_in, ext_expires_in, access_token}`; a wrong secret is
//! 401 `invalid_client` with `AADSTS7000215` and `error_codes`, `timestamp`,
//! `trace_id`, `correlation_id`, `error_uri`. Key Vault answers an
//! unauthenticated request with 401 and
//! `WWW-Authenticate: Bearer authorization="…/<tenant>", resource="https://vault.azure.net"`
//! (the challenge the Azure SDK's SecretClient expects before sending a token).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde_json::{Value, json};

use super::http::{Reply, Req, RequestIds, graph_error};
use super::server::State;

/// The B2C user flow the simulated tenant's ID tokens come from (`tfp`).
pub(super) const B2C_USER_FLOW: &str = "B2C_1_signin";

/// Which API a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Graph,
    Vault,
    Exchange,
}

impl Audience {
    fn resource(self) -> &'static str {
        match self {
            Audience::Graph => "https://graph.microsoft.com",
            Audience::Vault => "https://vault.azure.net",
            Audience::Exchange => "https://outlook.office365.com",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub audience: Audience,
    pub expires_at: i64,
}

/// The app registration, its secret(s) and issued tokens.
pub struct AuthState {
    pub client_id: String,
    pub secret: String,
    pub secret_name: String,
    /// Key Vault versions of the secret: (version, value, created).
    pub versions: Vec<(String, String, i64)>,
    /// Other secrets of the vault (`Sim::set_vault_secret`), by lower-case
    /// name: (version, value, created).
    pub other_secrets: HashMap<String, (String, String, i64)>,
    pub tokens: HashMap<String, TokenInfo>,
    pub token_lifetime_secs: i64,
    /// The App Service managed identity secret (`IDENTITY_HEADER`).
    pub identity_header: String,
}

pub fn random_secret() -> String {
    // Entra client secrets are 40 characters from this alphabet, e.g. "abc8Q~…".
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~";
    let mut rng = rand::rng();
    let mut s: String = (0..3).map(|_| A[rng.random_range(0..52)] as char).collect();
    s.push_str("8Q~");
    s.extend((0..34).map(|_| A[rng.random_range(0..A.len())] as char));
    s
}

impl AuthState {
    pub fn new(client_id: String, token_lifetime_secs: i64, now: i64) -> Self {
        let secret = random_secret();
        Self {
            client_id,
            secret: secret.clone(),
            secret_name: "dormant-client-secret".to_string(),
            versions: vec![(uuid::Uuid::new_v4().simple().to_string(), secret, now)],
            other_secrets: HashMap::new(),
            tokens: HashMap::new(),
            token_lifetime_secs,
            identity_header: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// A new secret; the old one stops working at once (as when it is deleted
    /// from the app registration). Key Vault gets a new version.
    pub fn rotate(&mut self, now: i64) -> String {
        let s = random_secret();
        self.secret = s.clone();
        self.versions
            .push((uuid::Uuid::new_v4().simple().to_string(), s.clone(), now));
        s
    }
}

fn aad_error(st: &State, status: u16, error: &str, code: u32, description: &str) -> Reply {
    let trace = uuid::Uuid::new_v4().to_string();
    let corr = uuid::Uuid::new_v4().to_string();
    let now = st.clock.now();
    let ts = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let full = format!(
        "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
    );
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": full,
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("{}/error?code={code}", st.base_url),
        }),
    )
    .with_header("content-type", "application/json; charset=utf-8")
}

/// Mint an access token for `audience` (the caller holds the auth lock).
fn mint(auth: &mut AuthState, tenant_id: &str, audience: Audience, now: i64) -> (String, i64) {
    let lifetime = auth.token_lifetime_secs;
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "sim-signing-key"});
    let claims = json!({
        "aud": audience.resource(),
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "iat": now, "nbf": now, "exp": now + lifetime,
        "appid": auth.client_id, "tid": tenant_id, "idtyp": "app",
        "oid": uuid::Uuid::new_v4().to_string(),
        "roles": ["User.ReadWrite.All", "AuditLog.Read.All", "Directory.ReadWrite.All", "Reports.Read.All", "ReportSettings.ReadWrite.All", "Mail.Send", "User.Invite.All", "RoleManagement.Read.Directory"],
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let sig: [u8; 32] = rand::random();
    let access_token = format!(
        "{}.{}.{}",
        jwt_part(&header),
        jwt_part(&claims),
        URL_SAFE_NO_PAD.encode(sig)
    );
    auth.tokens.retain(|_, t| t.expires_at + 3600 > now);
    auth.tokens.insert(
        access_token.clone(),
        TokenInfo {
            audience,
            expires_at: now + lifetime,
        },
    );
    (access_token, lifetime)
}

/// App Service / Functions managed identity endpoint (`IDENTITY_ENDPOINT`):
/// `GET /msi/token?api-version=2019-08-01&resource=…` with the
/// `X-IDENTITY-HEADER` secret; answers `expires_on` as a string of Unix seconds.
pub fn managed_identity(st: &State, r: &Req) -> Reply {
    st.stats
        .token_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = st.now();
    let mut auth = st.lock(&st.auth);
    if r.header("x-identity-header") != Some(auth.identity_header.as_str()) {
        return Reply::json(
            401,
            json!({"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong."}),
        );
    }
    let audience = match r.query_value("resource").map(|s| s.trim_end_matches('/')) {
        Some("https://graph.microsoft.com") => Audience::Graph,
        Some("https://vault.azure.net") => Audience::Vault,
        Some("https://outlook.office365.com") => Audience::Exchange,
        other => {
            return Reply::json(
                400,
                json!({"statusCode": 400, "message": format!("Unsupported resource '{}'.", other.unwrap_or(""))}),
            );
        }
    };
    let (token, lifetime) = mint(&mut auth, &st.tenant_id, audience, now);
    Reply::json(
        200,
        json!({
            "access_token": token,
            "expires_on": (now + lifetime).to_string(),
            "resource": audience.resource(),
            "token_type": "Bearer",
            "client_id": auth.client_id,
        }),
    )
    .with_header("content-type", "application/json; charset=utf-8")
}

fn jwt_part(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap_or_default())
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`.
pub fn token(st: &State, r: &Req, _ids: &RequestIds) -> Reply {
    st.stats
        .token_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if r.method != hyper::Method::POST {
        return aad_error(
            st,
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&r.body).into_owned().collect();
    let tenant_id = st.tenant_read().tenant_id.clone();
    let tenant_in_path = r.path.trim_matches('/').split('/').next().unwrap_or("");
    let domain = st.tenant_read().domain.clone();
    if !tenant_in_path.eq_ignore_ascii_case(&tenant_id)
        && !tenant_in_path.eq_ignore_ascii_case(&domain)
    {
        return aad_error(
            st,
            400,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            st,
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let now = st.now();
    let mut auth = st.lock(&st.auth);
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id.is_empty() {
        return aad_error(
            st,
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if !client_id.eq_ignore_ascii_case(&auth.client_id) {
        return aad_error(
            st,
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    if let Some(secret) = form.get("client_secret") {
        if *secret != auth.secret {
            return aad_error(
                st,
                401,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    auth.client_id
                ),
            );
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        // The simulator has no certificate registered: it checks the assertion's
        // shape and claims (iss = sub = client id), not its signature.
        let parts: Vec<&str> = assertion.split('.').collect();
        let claims = parts
            .get(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let ok = parts.len() == 3
            && form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && claims.as_ref().is_some_and(|c| {
                c["iss"].as_str() == Some(&auth.client_id)
                    && c["sub"].as_str() == Some(&auth.client_id)
            });
        if !ok {
            return aad_error(
                st,
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            );
        }
    } else {
        return aad_error(
            st,
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    let audience = match scope.trim() {
        "https://graph.microsoft.com/.default" => Audience::Graph,
        "https://vault.azure.net/.default" => Audience::Vault,
        "https://outlook.office365.com/.default" => Audience::Exchange,
        _ => {
            return aad_error(
                st,
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        }
    };
    let (access_token, lifetime) = mint(&mut auth, &tenant_id, audience, now);
    Reply::json(200, json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token}))
        .with_header("content-type", "application/json; charset=utf-8")
}

/// Result of checking a bearer token.
pub enum TokenCheck {
    Ok,
    Missing,
    Invalid,
    Expired,
    WrongAudience,
}

pub fn check_token(st: &State, r: &Req, want: Audience) -> TokenCheck {
    let Some(h) = r.header("authorization") else {
        return TokenCheck::Missing;
    };
    let Some(tok) = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
    else {
        return TokenCheck::Invalid;
    };
    let auth = st.lock(&st.auth);
    match auth.tokens.get(tok.trim()) {
        None => TokenCheck::Invalid,
        Some(t) if t.audience != want => TokenCheck::WrongAudience,
        Some(t) if t.expires_at <= st.now() => TokenCheck::Expired,
        Some(_) => TokenCheck::Ok,
    }
}

/// Graph's 401 for a bad token (`InvalidAuthenticationToken`).
pub fn graph_unauthorized(check: &TokenCheck, ids: &RequestIds) -> Option<Reply> {
    let msg = match check {
        TokenCheck::Ok => return None,
        TokenCheck::Missing => "Access token is empty.",
        TokenCheck::Invalid => "IDX14100: JWT is not well formed, there are no dots (.).",
        TokenCheck::Expired => "Lifetime validation failed, the token is expired.",
        TokenCheck::WrongAudience => "Access token validation failure. Invalid audience.",
    };
    Some(
        graph_error(401, "InvalidAuthenticationToken", msg, ids).with_header(
            "WWW-Authenticate",
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#,
        ),
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub fn openid(st: &State, tenant: &str) -> Reply {
    let tid = st.tenant_read().tenant_id.clone();
    let b = &st.base_url;
    let _ = tenant;
    Reply::json(
        200,
        json!({
            "token_endpoint": format!("{b}/{tid}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{b}/{tid}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{b}/{tid}/v2.0"),
            "authorization_endpoint": format!("{b}/{tid}/oauth2/v2.0/authorize"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }),
    )
}

fn kv_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
        .with_header("content-type", "application/json; charset=utf-8")
}

/// `GET /secrets/{name}[/{version}]?api-version=7.x` on the vault.
pub fn keyvault(st: &State, r: &Req, rest: &[&str]) -> Reply {
    let tid = st.tenant_read().tenant_id.clone();
    let challenge = format!(
        r#"Bearer authorization="{}/{tid}", resource="https://vault.azure.net""#,
        st.base_url
    );
    if r.query_value("api-version").is_none() {
        return kv_error(
            400,
            "BadParameter",
            "The request URI contains an invalid or missing api-version.",
        );
    }
    match check_token(st, r, Audience::Vault) {
        TokenCheck::Ok => {}
        TokenCheck::Missing => {
            return kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            )
            .with_header("WWW-Authenticate", challenge);
        }
        TokenCheck::Expired => {
            return kv_error(
                401,
                "Unauthorized",
                "AKV10032: Invalid issuer. Token expired.",
            )
            .with_header("WWW-Authenticate", challenge);
        }
        _ => {
            return kv_error(401, "Unauthorized", "AKV10022: Invalid audience.")
                .with_header("WWW-Authenticate", challenge);
        }
    }
    if r.method != hyper::Method::GET {
        return kv_error(
            405,
            "MethodNotAllowed",
            "The requested method is not allowed for this resource.",
        );
    }
    let auth = st.lock(&st.auth);
    let (name, version) = match rest {
        [name] => (*name, None),
        [name, v] => (*name, Some(*v)),
        _ => return kv_error(404, "NotFound", "The requested resource was not found."),
    };
    let found = if name.eq_ignore_ascii_case(&auth.secret_name) {
        match version {
            None | Some("") => auth.versions.last(),
            Some(v) => auth.versions.iter().find(|(id, _, _)| id == v),
        }
    } else {
        auth.other_secrets
            .get(&name.to_ascii_lowercase())
            .filter(|(id, _, _)| version.is_none_or(|v| v.is_empty() || v == id))
    };
    let Some((ver, value, created)) = found else {
        return kv_error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        );
    };
    Reply::json(
        200,
        json!({
            "value": value,
            "id": format!("{}/secrets/{name}/{ver}", st.base_url),
            "attributes": {
                "enabled": true,
                "created": created,
                "updated": created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }),
    )
    .with_header("content-type", "application/json; charset=utf-8")
}

/// `GET /{tenant}/discovery/v2.0/keys`, named by the OpenID metadata: the key
/// that signs user ID tokens. Graph access tokens are not meant to be
/// validated by clients (Microsoft: "treat them as opaque") and are not signed
/// with it, so a client that tries to verify them fails loudly.
pub fn jwks(st: &State) -> Reply {
    let key = st
        .idp_key
        .get_or_init(|| IdpKey::generate().map_err(|e| e.to_string()));
    match key {
        Ok(k) => Reply::json(200, json!({"keys": [k.jwk()]})),
        Err(e) => Reply::json(
            500,
            json!({"error": "server_error", "error_description": e}),
        ),
    }
}

/// The simulated identity provider's RS256 signing key for *user* ID tokens
/// (what the GDPR endpoints verify: signature against the issuer's JWKS, `iss`,
/// `aud`, `exp`/`nbf`, `auth_time`, subject in `oid`). Generated on first use.
pub struct IdpKey {
    pub kid: String,
    key: rcgen::KeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Read one DER INTEGER at `b[*pos..]`, without its leading zero.
fn der_integer(b: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    if *b.get(*pos)? != 0x02 {
        return None;
    }
    *pos += 1;
    let len = der_len(b, pos)?;
    let v = b.get(*pos..*pos + len)?;
    *pos += len;
    let start = v
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(v.len().saturating_sub(1));
    Some(v[start..].to_vec())
}

fn der_len(b: &[u8], pos: &mut usize) -> Option<usize> {
    let first = *b.get(*pos)?;
    *pos += 1;
    if first < 0x80 {
        return Some(usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    let mut len = 0usize;
    for _ in 0..n {
        len = (len << 8) | usize::from(*b.get(*pos)?);
        *pos += 1;
    }
    Some(len)
}

impl IdpKey {
    pub fn generate() -> anyhow::Result<IdpKey> {
        use rcgen::PublicKeyData;
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
        // PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
        let der = key.der_bytes().to_vec();
        let mut pos = 1;
        let parsed = der_len(&der, &mut pos).and_then(|_| {
            let n = der_integer(&der, &mut pos)?;
            let e = der_integer(&der, &mut pos)?;
            Some((n, e))
        });
        let Some((n, e)) = parsed else {
            anyhow::bail!("unexpected RSA public key encoding")
        };
        let kid = URL_SAFE_NO_PAD.encode(&n[..12]);
        Ok(IdpKey { kid, key, n, e })
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": URL_SAFE_NO_PAD.encode(&self.n), "e": URL_SAFE_NO_PAD.encode(&self.e)})
    }

    /// Sign `claims` as a compact RS256 JWS.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        use rcgen::SigningKey;
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let input = format!("{}.{}", jwt_part(&header), jwt_part(claims));
        let sig = self.key.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// A user ID token as the tenant's identity provider would issue after an
/// interactive sign-in `auth_age_secs` ago (B2C/Entra v2.0 claims).
pub fn issue_user_token(
    st: &State,
    user: &str,
    audience: Option<&str>,
    auth_age_secs: i64,
    lifetime_secs: i64,
) -> Option<String> {
    let now = st.now();
    let key = st
        .idp_key
        .get_or_init(|| IdpKey::generate().map_err(|e| e.to_string()));
    let key = key.as_ref().ok()?;
    let (claims, i) = {
        let t = st.tenant_read();
        let i = t.resolve(user)?;
        let oid = t.user_id(i);
        let aud = audience
            .map(str::to_string)
            .unwrap_or_else(|| st.client_id.clone());
        let mut c = json!({
            "iss": format!("{}/{}/v2.0", st.base_url, t.tenant_id),
            "aud": aud,
            "sub": oid,
            "oid": oid,
            "tid": t.tenant_id,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_secs,
            "auth_time": now - auth_age_secs,
            "ver": "2.0",
            "name": t.display_name(i),
        });
        if t.kind == super::tenant::TenantKind::B2c {
            c["emails"] = json!([t.b2c_sign_in_name(i)]);
            c["tfp"] = json!(B2C_USER_FLOW);
        } else {
            c["preferred_username"] = json!(t.upn(i));
        }
        (c, i)
    };
    let token = key.sign(&claims).ok()?;
    let id = st.tenant_read().user_id(i);
    super::control::record_sign_in(st, &id, true, true);
    Some(token)
}
