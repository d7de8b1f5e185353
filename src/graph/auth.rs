//! Tokens for Graph through `azure_identity` 1.x, with the credential's secret
//! or certificate optionally read from Key Vault.
//!
//! Secret rotation: when the token authority answers `invalid_client` and the
//! credential came from Key Vault, the secret is re-read **once** and the
//! credential rebuilt; a second `invalid_client` is a permanent
//! [`GraphError::Auth`]. Nothing here logs a secret or a token.

use super::GraphError;
use super::http::sdk_transport;
use super::settings::{CredentialKind, GraphSettings};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use base64::Engine;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::Instrument;

/// Where Graph bearer tokens come from. Production uses [`EntraTokenProvider`];
/// tests may inject their own.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A bearer token for Graph (cached by the credential until near expiry).
    fn token(&self) -> BoxFuture<'_, Result<SecretString, GraphError>>;
    /// Forget cached tokens: Graph answered 401 `InvalidAuthenticationToken`
    /// (e.g. the token was revoked before its expiry).
    fn invalidate(&self) -> BoxFuture<'_, ()>;
}

/// A fixed token: for tests and for callers that obtained a token elsewhere.
#[derive(Clone)]
pub struct StaticToken(pub SecretString);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<SecretString, GraphError>> {
        let t = self.0.clone();
        Box::pin(async move { Ok(t) })
    }
    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Credential material that may come from Key Vault.
#[derive(Clone)]
enum Material {
    /// Managed and workload identity carry no material of ours.
    None,
    Secret(SecretString),
    Certificate(Arc<CertificateAssertion>),
}

struct State {
    credential: Option<Arc<dyn TokenCredential>>,
    material: Option<Material>,
    /// Bumped whenever the material is re-read, so that concurrent callers
    /// that all saw `invalid_client` re-read Key Vault only once.
    generation: u64,
}

/// Tokens from Entra ID via `azure_identity`, over the shared HTTP client.
pub struct EntraTokenProvider {
    settings: GraphSettings,
    http: reqwest::Client,
    scope: String,
    keyvault_credential: Option<Arc<dyn TokenCredential>>,
    state: Mutex<State>,
}

impl fmt::Debug for EntraTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokenProvider")
            .field("tenant", &self.settings.tenant_id)
            .field("credential", &self.settings.credential)
            .finish_non_exhaustive()
    }
}

/// How a failed token request should be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthFailure {
    /// AADSTS `invalid_client`: wrong, expired or rotated secret / certificate.
    InvalidClient(String),
    Transient(String),
    Other(String),
}

/// AADSTS codes that mean "this client credential is not (or no longer) valid":
/// 7000215 invalid secret, 7000222 expired secret, 700027 bad certificate
/// assertion, 7000274 (cert key not found), 700024 (assertion not in its validity window).
const INVALID_CLIENT_CODES: &[&str] = &["7000215", "7000222", "700027", "7000274", "700024"];

impl EntraTokenProvider {
    /// The same credential for another resource (Exchange Online's admin
    /// API takes `https://outlook.office365.com/.default`).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// `keyvault_credential` reads Key Vault; `None` = the managed identity
    /// (`keyvault_identity_client_id`, else system-assigned). Tests inject one.
    pub fn new(
        settings: GraphSettings,
        http: reqwest::Client,
        keyvault_credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self, GraphError> {
        let needs_client_id = matches!(
            settings.credential,
            CredentialKind::ClientSecret | CredentialKind::ClientCertificate
        );
        if needs_client_id && settings.client_id.as_deref().is_none_or(str::is_empty) {
            return Err(GraphError::Auth(
                "DORMANT_CLIENT_ID is required for this credential".into(),
            ));
        }
        let has_vault = settings.keyvault_url.is_some();
        match settings.credential {
            CredentialKind::ClientSecret
                if settings.client_secret.is_none()
                    && !(has_vault && settings.client_secret_name.is_some()) =>
            {
                return Err(GraphError::Auth(
                    "client-secret credential needs DORMANT_CLIENT_SECRET, or DORMANT_KEYVAULT_URL with DORMANT_CLIENT_SECRET_NAME".into(),
                ));
            }
            CredentialKind::ClientCertificate
                if settings.client_certificate_path.is_none()
                    && !(has_vault && settings.client_certificate_name.is_some()) =>
            {
                return Err(GraphError::Auth(
                    "client-certificate credential needs DORMANT_KEYVAULT_URL with DORMANT_CLIENT_CERT_NAME, or a certificate file".into(),
                ));
            }
            _ => {}
        }
        if settings.authority_host.scheme() != "https" {
            return Err(GraphError::Auth(
                "DORMANT_AUTHORITY_HOST must use https".into(),
            ));
        }
        Ok(Self {
            scope: settings.graph_scope(),
            settings,
            http,
            keyvault_credential,
            state: Mutex::new(State {
                credential: None,
                material: None,
                generation: 0,
            }),
        })
    }

    fn client_options(&self) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self
            .settings
            .authority_host
            .as_str()
            .trim_end_matches('/')
            .to_string();
        ClientOptions {
            transport: Some(sdk_transport(&self.http)),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            ..Default::default()
        }
    }

    fn material_from_keyvault(&self) -> bool {
        self.settings.keyvault_url.is_some()
            && match self.settings.credential {
                CredentialKind::ClientSecret => self.settings.client_secret_name.is_some(),
                CredentialKind::ClientCertificate => {
                    self.settings.client_certificate_name.is_some()
                }
                _ => false,
            }
    }

    fn keyvault_credential(&self) -> Result<Arc<dyn TokenCredential>, GraphError> {
        if let Some(c) = &self.keyvault_credential {
            return Ok(c.clone());
        }
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: self
                .settings
                .keyvault_identity_client_id
                .clone()
                .map(UserAssignedId::ClientId),
            client_options: ClientOptions {
                transport: Some(sdk_transport(&self.http)),
                ..Default::default()
            },
        };
        let c: Arc<dyn TokenCredential> = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| GraphError::Auth(format!("managed identity for Key Vault: {e}")))?;
        Ok(c)
    }

    /// Reads another of dormant's secrets from the same vault with the same
    /// identity as the client credential (the attestation key).
    pub async fn read_secret(&self, name: &str) -> Result<SecretString, GraphError> {
        self.read_keyvault(name).await
    }

    /// Reads one Key Vault secret's value.
    async fn read_keyvault(&self, name: &str) -> Result<SecretString, GraphError> {
        let vault = self
            .settings
            .keyvault_url
            .as_ref()
            .ok_or_else(|| GraphError::Auth("DORMANT_KEYVAULT_URL is not set".into()))?;
        // Key Vault's challenge names resource `https://vault.azure.net`; a local
        // stand-in on 127.0.0.1 cannot match it (FACTS: set it false there only).
        let loopback = matches!(
            vault.host(),
            Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_))
        ) || vault.host_str() == Some("localhost");
        let options = SecretClientOptions {
            client_options: ClientOptions {
                transport: Some(sdk_transport(&self.http)),
                ..Default::default()
            },
            verify_challenge_resource: Some(!loopback),
            ..Default::default()
        };
        let client = SecretClient::new(vault.as_str(), self.keyvault_credential()?, Some(options))
            .map_err(|e| GraphError::Auth(format!("Key Vault client: {e}")))?;
        let span = tracing::info_span!("keyvault.get_secret", secret_name = name);
        let response = client
            .get_secret(name, None)
            .instrument(span)
            .await
            .map_err(|e| match classify_azure_error(&e) {
                AuthFailure::Transient(m) => GraphError::Transient(format!("Key Vault: {m}")),
                AuthFailure::InvalidClient(m) | AuthFailure::Other(m) => {
                    GraphError::Auth(format!("cannot read Key Vault secret '{name}': {m}"))
                }
            })?;
        let secret = response
            .into_model()
            .map_err(|e| GraphError::Transient(format!("Key Vault answer unreadable: {e}")))?;
        let value = secret
            .value
            .ok_or_else(|| GraphError::Auth(format!("Key Vault secret '{name}' has no value")))?;
        tracing::info!(
            secret_name = name,
            "read the client credential from Key Vault"
        );
        Ok(SecretString::from(value))
    }

    /// The credential material. A secret given directly
    /// (`DORMANT_CLIENT_SECRET`, e.g. a resolved Key Vault reference) is used
    /// first; Key Vault is read when there is none, and on `reload` after
    /// `invalid_client` (the secret was rotated).
    async fn load_material(&self, after_rejection: bool) -> Result<Material, GraphError> {
        let s = &self.settings;
        match s.credential {
            CredentialKind::ClientSecret => {
                let direct = s.client_secret.clone().filter(|_| !after_rejection);
                if let Some(secret) = direct {
                    return Ok(Material::Secret(secret));
                }
                if self.material_from_keyvault() {
                    let name = s.client_secret_name.as_deref().unwrap_or_default();
                    return Ok(Material::Secret(self.read_keyvault(name).await?));
                }
                s.client_secret.clone().map(Material::Secret).ok_or_else(|| {
                    GraphError::Auth(
                        "client-secret credential needs DORMANT_CLIENT_SECRET or DORMANT_KEYVAULT_URL + DORMANT_CLIENT_SECRET_NAME".into(),
                    )
                })
            }
            CredentialKind::ClientCertificate => {
                let pem = if self.material_from_keyvault() {
                    let name = s.client_certificate_name.as_deref().unwrap_or_default();
                    self.read_keyvault(name).await?
                } else if let Some(path) = &s.client_certificate_path {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        GraphError::Auth(format!("cannot read certificate {}: {e}", path.display()))
                    })?;
                    SecretString::from(text)
                } else {
                    return Err(GraphError::Auth(
                        "client-certificate credential needs DORMANT_KEYVAULT_URL + DORMANT_CLIENT_CERT_NAME or a certificate file".into(),
                    ));
                };
                let audience = format!(
                    "{}/{}/oauth2/v2.0/token",
                    s.authority_host.as_str().trim_end_matches('/'),
                    s.tenant_id
                );
                let client_id = s.client_id.clone().unwrap_or_default();
                Ok(Material::Certificate(Arc::new(
                    CertificateAssertion::from_pem(pem.expose_secret(), client_id, audience)?,
                )))
            }
            CredentialKind::ManagedIdentity | CredentialKind::WorkloadIdentity => {
                Ok(Material::None)
            }
        }
    }

    fn build_credential(
        &self,
        material: &Material,
    ) -> Result<Arc<dyn TokenCredential>, GraphError> {
        let s = &self.settings;
        let client_id = s.client_id.clone().unwrap_or_default();
        let err = |e: azure_core::Error| GraphError::Auth(format!("credential set-up: {e}"));
        let credential: Arc<dyn TokenCredential> = match (s.credential, material) {
            (CredentialKind::ManagedIdentity, _) => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: s.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: self.client_options(),
                }))
                .map_err(err)?
            }
            (CredentialKind::WorkloadIdentity, _) => {
                let options = WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: self.client_options(),
                    },
                    client_id: s.client_id.clone(),
                    tenant_id: Some(s.tenant_id.clone()),
                    token_file_path: s.federated_token_file.clone(),
                };
                WorkloadIdentityCredential::new(Some(options)).map_err(err)?
            }
            (CredentialKind::ClientSecret, Material::Secret(secret)) => {
                ClientSecretCredential::new(
                    &s.tenant_id,
                    client_id,
                    Secret::new(secret.expose_secret().to_string()),
                    Some(ClientSecretCredentialOptions {
                        client_options: self.client_options(),
                    }),
                )
                .map_err(err)?
            }
            (CredentialKind::ClientCertificate, Material::Certificate(assertion)) => {
                ClientAssertionCredential::new(
                    s.tenant_id.clone(),
                    client_id,
                    SharedAssertion(assertion.clone()),
                    Some(ClientAssertionCredentialOptions {
                        client_options: self.client_options(),
                    }),
                )
                .map_err(err)?
            }
            _ => {
                return Err(GraphError::Auth(
                    "credential material does not match the credential kind".into(),
                ));
            }
        };
        Ok(credential)
    }

    /// The current credential and its generation, building it on first use.
    async fn current(&self) -> Result<(Arc<dyn TokenCredential>, u64), GraphError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.credential {
            return Ok((c.clone(), st.generation));
        }
        let material = match &st.material {
            Some(m) => m.clone(),
            None => {
                let m = self.load_material(false).await?;
                st.material = Some(m.clone());
                m
            }
        };
        let c = self.build_credential(&material)?;
        st.credential = Some(c.clone());
        Ok((c, st.generation))
    }

    /// Re-reads Key Vault unless another caller already did since `seen`.
    async fn reload(&self, seen: u64) -> Result<(), GraphError> {
        let mut st = self.state.lock().await;
        if st.generation != seen {
            return Ok(());
        }
        tracing::warn!(
            "the token authority rejected the client credential (invalid_client); re-reading it from Key Vault once"
        );
        let m = self.load_material(true).await?;
        let c = self.build_credential(&m)?;
        st.material = Some(m);
        st.credential = Some(c);
        st.generation += 1;
        Ok(())
    }

    async fn request(
        &self,
        credential: &Arc<dyn TokenCredential>,
    ) -> Result<SecretString, AuthFailure> {
        credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map(|t| SecretString::from(t.token.secret().to_string()))
            .map_err(|e| classify_azure_error(&e))
    }

    async fn token_impl(&self) -> Result<SecretString, GraphError> {
        let (credential, generation) = self.current().await?;
        match self.request(&credential).await {
            Ok(t) => Ok(t),
            Err(AuthFailure::InvalidClient(_)) if self.material_from_keyvault() => {
                self.reload(generation).await?;
                let (credential, _) = self.current().await?;
                self.request(&credential).await.map_err(|f| match f {
                    AuthFailure::InvalidClient(m) => GraphError::Auth(format!(
                        "the client credential is invalid even after re-reading it from Key Vault: {m}"
                    )),
                    AuthFailure::Transient(m) => GraphError::Transient(m),
                    AuthFailure::Other(m) => GraphError::Auth(m),
                })
            }
            Err(AuthFailure::InvalidClient(m)) => Err(GraphError::Auth(format!(
                "the client credential is invalid (invalid_client): {m}"
            ))),
            Err(AuthFailure::Transient(m)) => Err(GraphError::Transient(m)),
            Err(AuthFailure::Other(m)) => Err(GraphError::Auth(m)),
        }
    }
}

impl TokenProvider for EntraTokenProvider {
    fn token(&self) -> BoxFuture<'_, Result<SecretString, GraphError>> {
        Box::pin(self.token_impl())
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            // A fresh credential has an empty token cache (azure_identity's
            // cache has no "force refresh"); the material is kept.
            self.state.lock().await.credential = None;
        })
    }
}

/// Sorts an `azure_core` error from a credential or Key Vault. Walks the
/// source chain because `azure_identity` wraps the authority's answer.
fn classify_azure_error(err: &azure_core::Error) -> AuthFailure {
    let text = err.to_string();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core::Error>() {
            match az.kind() {
                ErrorKind::HttpResponse {
                    status,
                    error_code,
                    raw_response,
                } => {
                    let body_says_invalid_client = raw_response
                        .as_ref()
                        .and_then(|r| {
                            serde_json::from_slice::<serde_json::Value>(r.body().as_ref()).ok()
                        })
                        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                        .is_some_and(|e| e == "invalid_client");
                    let code_says_invalid_client = error_code.as_deref().is_some_and(|codes| {
                        codes
                            .split(',')
                            .any(|c| INVALID_CLIENT_CODES.contains(&c.trim()))
                    });
                    if body_says_invalid_client || code_says_invalid_client {
                        return AuthFailure::InvalidClient(text);
                    }
                    let s = u16::from(*status);
                    if s == 429 || s == 408 || s >= 500 {
                        return AuthFailure::Transient(text);
                    }
                }
                ErrorKind::Io | ErrorKind::Connection => return AuthFailure::Transient(text),
                _ => {}
            }
        }
        if let Some(re) = e.downcast_ref::<reqwest::Error>()
            && (re.is_timeout() || re.is_connect() || re.is_request() || re.is_body())
        {
            return AuthFailure::Transient(text);
        }
        current = e.source();
    }
    AuthFailure::Other(text)
}

/// A certificate credential's client assertion: an RS256 JWT signed with the
/// certificate's key. Written here because `azure_identity`'s
/// `ClientCertificateCredential` needs OpenSSL, which this project refuses.
pub struct CertificateAssertion {
    key: aws_lc_rs::rsa::KeyPair,
    x5t: String,
    x5t_s256: String,
    client_id: String,
    audience: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("x5t#S256", &self.x5t_s256)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl CertificateAssertion {
    /// From a PEM holding the certificate (first = the app's) and its RSA key
    /// (PKCS#8 or PKCS#1): the shape of a Key Vault certificate's secret with
    /// content type `application/x-pem-file`.
    pub fn from_pem(pem: &str, client_id: String, audience: String) -> Result<Self, GraphError> {
        let mut cert = None;
        let mut key = None;
        for item in rustls_pemfile::read_all(&mut pem.as_bytes()) {
            let item = item.map_err(|e| GraphError::Auth(format!("certificate PEM: {e}")))?;
            match item {
                rustls_pemfile::Item::X509Certificate(c) if cert.is_none() => cert = Some(c),
                rustls_pemfile::Item::Pkcs8Key(k) if key.is_none() => {
                    key = Some(
                        aws_lc_rs::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(|e| {
                            GraphError::Auth(format!("certificate key is not RSA PKCS#8: {e}"))
                        })?,
                    )
                }
                rustls_pemfile::Item::Pkcs1Key(k) if key.is_none() => {
                    key = Some(
                        aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der()).map_err(|e| {
                            GraphError::Auth(format!("certificate key is not RSA PKCS#1: {e}"))
                        })?,
                    )
                }
                _ => {}
            }
        }
        let cert = cert.ok_or_else(|| {
            GraphError::Auth(
                "no certificate in the PEM (a PKCS#12 Key Vault certificate must use content type application/x-pem-file)".into(),
            )
        })?;
        let key = key.ok_or_else(|| GraphError::Auth("no RSA private key in the PEM".into()))?;
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert);
        Ok(Self {
            key,
            x5t: b64url(sha1.as_ref()),
            x5t_s256: b64url(sha256.as_ref()),
            client_id,
            audience,
        })
    }

    /// A fresh signed assertion valid for 10 minutes.
    pub fn sign(&self) -> Result<String, GraphError> {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({
            "alg": "RS256", "typ": "JWT", "x5t": self.x5t, "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": self.audience, "iss": self.client_id, "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| GraphError::Auth("cannot sign the client assertion".into()))?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }
}

#[derive(Debug, Clone)]
struct SharedAssertion(Arc<CertificateAssertion>);

#[async_trait::async_trait]
impl ClientAssertion for SharedAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.0
            .sign()
            .map_err(|e| azure_core::Error::with_message(ErrorKind::Credential, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("rsa key");
        let cert = rcgen::CertificateParams::new(vec!["dormant".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn certificate_assertion_is_a_verifiable_rs256_jwt() {
        let (cert, key) = rsa_pem();
        let a = CertificateAssertion::from_pem(
            &format!("{key}{cert}"),
            "app-id".into(),
            "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
        )
        .expect("parses");
        let jwt = a.sign().expect("signs");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .expect("b64url")
        };
        let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).expect("json");
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).expect("json");
        assert_eq!(header["alg"], "RS256");
        assert!(header["x5t#S256"].as_str().is_some_and(|s| s.len() == 43));
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(
            claims["aud"],
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            aws_lc_rs::signature::KeyPair::public_key(&a.key)
                .as_ref()
                .to_vec(),
        );
        public
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &dec(parts[2]),
            )
            .expect("signature verifies");
    }

    #[test]
    fn pem_without_key_or_cert_is_an_auth_error() {
        let (cert, key) = rsa_pem();
        assert!(matches!(
            CertificateAssertion::from_pem(&cert, "a".into(), "b".into()),
            Err(GraphError::Auth(_))
        ));
        assert!(matches!(
            CertificateAssertion::from_pem(&key, "a".into(), "b".into()),
            Err(GraphError::Auth(_))
        ));
        assert!(CertificateAssertion::from_pem("garbage", "a".into(), "b".into()).is_err());
    }

    #[test]
    fn client_secret_needs_a_client_id() {
        let mut s = GraphSettings::new("t");
        s.credential = CredentialKind::ClientSecret;
        let http = reqwest::Client::new();
        assert!(EntraTokenProvider::new(s.clone(), http.clone(), None).is_err());
        s.client_id = Some("app".into());
        assert!(
            EntraTokenProvider::new(s.clone(), http.clone(), None).is_err(),
            "no secret anywhere"
        );
        s.client_secret = Some(SecretString::from("x".to_string()));
        assert!(EntraTokenProvider::new(s.clone(), http.clone(), None).is_ok());
        s.client_secret = None;
        s.keyvault_url = Some(url::Url::parse("https://kv.vault.azure.net").expect("url"));
        s.client_secret_name = Some("dormant-secret".into());
        assert!(EntraTokenProvider::new(s.clone(), http.clone(), None).is_ok());
        s.credential = CredentialKind::ClientCertificate;
        assert!(EntraTokenProvider::new(s.clone(), http.clone(), None).is_err());
        s.client_certificate_name = Some("dormant-cert".into());
        assert!(EntraTokenProvider::new(s.clone(), http.clone(), None).is_ok());
        s.authority_host = url::Url::parse("http://login.example").expect("url");
        assert!(
            EntraTokenProvider::new(s, http, None).is_err(),
            "https only"
        );
    }
}
