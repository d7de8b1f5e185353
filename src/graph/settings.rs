//! What the Graph client needs to know about one tenant. The lead maps the
//! validated app configuration (`DORMANT_*`) into [`GraphSettings`].

use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, DEFAULT_AUTHORITY_HOST, DEFAULT_GRAPH_URL};
pub use crate::config::{CredentialKind, TenantKind};

/// Tenant size band for the identity & access budget: 3,500 / 5,000 / 8,000
/// resource units per 10 s for tenants under 50 / 50–500 / over 500 users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantSize {
    Small,
    Medium,
    /// The safe default for a tool meant for big tenants: a smaller tenant
    /// answers 429 sooner, and the pacer honours it.
    #[default]
    Large,
}

/// Settings of the Graph client for one tenant.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Directory (tenant) id or `x.onmicrosoft.com`.
    pub tenant_id: String,
    pub tenant_kind: TenantKind,
    pub tenant_size: TenantSize,
    /// Graph root without version, `https://graph.microsoft.com` by default.
    pub graph_url: url::Url,
    /// Token authority, `https://login.microsoftonline.com` by default.
    pub authority_host: url::Url,
    pub credential: CredentialKind,
    /// App registration id (client-secret / certificate / workload identity),
    /// or the client id of a user-assigned managed identity.
    pub client_id: Option<String>,
    /// The secret itself when it is not read from Key Vault.
    pub client_secret: Option<SecretString>,
    /// A PEM file with the certificate and its RSA private key, when the
    /// certificate is not read from Key Vault.
    pub client_certificate_path: Option<PathBuf>,
    /// `DORMANT_KEYVAULT_URL`.
    pub keyvault_url: Option<url::Url>,
    /// `DORMANT_CLIENT_SECRET_NAME`: Key Vault secret holding the client secret.
    pub client_secret_name: Option<String>,
    /// `DORMANT_CLIENT_CERT_NAME`: Key Vault certificate (its backing secret,
    /// content type `application/x-pem-file`).
    pub client_certificate_name: Option<String>,
    /// Client id of the user-assigned managed identity that reads Key Vault;
    /// `None` = the system-assigned identity.
    pub keyvault_identity_client_id: Option<String>,
    /// Federated token file for workload identity; `None` = `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// `DORMANT_CA_FILE`: extra trusted roots, added to the normal ones.
    pub ca_file: Option<PathBuf>,
    /// Fraction (0, 1] of each documented budget this instance may use:
    /// several instances share one app's per-tenant budget.
    pub budget_share: f64,
    /// Longest a single call keeps retrying transient failures and 429s.
    pub max_retry_time: Duration,
    /// Per-attempt timeout of one HTTP request (headers and body).
    pub request_timeout: Duration,
}

impl GraphSettings {
    /// Settings with the documented defaults for `tenant_id`.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            tenant_kind: TenantKind::Workforce,
            tenant_size: TenantSize::default(),
            graph_url: url::Url::parse(DEFAULT_GRAPH_URL).expect("constant URL parses"),
            authority_host: url::Url::parse(DEFAULT_AUTHORITY_HOST).expect("constant URL parses"),
            credential: CredentialKind::ManagedIdentity,
            client_id: None,
            client_secret: None,
            client_certificate_path: None,
            keyvault_url: None,
            client_secret_name: None,
            client_certificate_name: None,
            keyvault_identity_client_id: None,
            federated_token_file: None,
            ca_file: None,
            budget_share: 0.5,
            max_retry_time: Duration::from_secs(180),
            request_timeout: Duration::from_secs(100),
        }
    }

    /// The validated app configuration, mapped.
    pub fn from_config(config: &Config) -> Self {
        let mut s = Self::new(config.tenant_id.clone());
        s.tenant_kind = config.tenant_kind;
        s.graph_url = config.graph_url.clone();
        s.authority_host = config.authority_host.clone();
        s.credential = config.credential;
        s.client_id = config.client_id.clone();
        s.client_secret = config.client_secret.clone();
        s.keyvault_url = config.keyvault_url.clone();
        s.client_secret_name = config.client_secret_name.clone();
        s.client_certificate_name = config.client_cert_name.clone();
        s.ca_file = config.ca_file.clone();
        s.budget_share = config.graph_budget_share;
        s
    }

    /// The token scope for Graph: `{graph root}/.default` for Graph's own
    /// clouds (public, US Government, DoD, China: each is its own resource),
    /// and the public Graph resource for any other root — a private proxy or
    /// the simulator forwards to Graph, whose tokens it expects.
    pub fn graph_scope(&self) -> String {
        const CLOUDS: &[&str] = &[
            "graph.microsoft.com",
            "graph.microsoft.us",
            "dod-graph.microsoft.us",
            "microsoftgraph.chinacloudapi.cn",
        ];
        match self.graph_url.host_str() {
            Some(host) if CLOUDS.contains(&host) => {
                format!("https://{host}/.default")
            }
            _ => format!("{DEFAULT_GRAPH_URL}/.default"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_public_cloud() {
        let s = GraphSettings::new("contoso.onmicrosoft.com");
        assert_eq!(s.graph_scope(), "https://graph.microsoft.com/.default");
        let mut us = s.clone();
        us.graph_url = url::Url::parse("https://graph.microsoft.us").expect("url");
        assert_eq!(us.graph_scope(), "https://graph.microsoft.us/.default");
        let mut proxy = s.clone();
        proxy.graph_url = url::Url::parse("https://127.0.0.1:8443").expect("url");
        assert_eq!(proxy.graph_scope(), "https://graph.microsoft.com/.default");
        assert_eq!(
            s.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(s.credential, CredentialKind::ManagedIdentity);
    }
}
