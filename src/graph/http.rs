//! The one outbound HTTP stack: a single `reqwest::Client` used for Graph and
//! handed to the Azure SDK (`ClientOptions.transport`) for tokens and Key Vault.

use super::GraphError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Builds the shared client.
///
/// - Trusts the platform roots plus every certificate in `ca_file` (PEM):
///   reqwest 0.13's `tls_certs_merge` hands them to
///   `rustls_platform_verifier::Verifier::new_with_extra_roots`, so the extra
///   CAs are *added* (FACTS: `DORMANT_CA_FILE` adds, never replaces).
/// - Never follows redirects: the usage report's 302 goes to a pre-authenticated
///   URL that must not receive our `Authorization` header, and the Azure SDK
///   itself builds its reqwest client with redirects off.
pub fn build_http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, GraphError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(20))
        // A stalled connection (also mid-way through a streamed report) fails
        // after a minute without bytes instead of hanging the scan.
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("dormant/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        builder = builder.tls_certs_merge(load_pem_certs(path)?);
    }
    builder
        .build()
        .map_err(|e| GraphError::Auth(format!("cannot build the HTTPS client: {e}")))
}

/// Reads every `CERTIFICATE` block of a PEM file.
pub fn load_pem_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, GraphError> {
    let pem = std::fs::read(path).map_err(|e| {
        GraphError::Auth(format!(
            "cannot read DORMANT_CA_FILE {}: {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        GraphError::Auth(format!(
            "DORMANT_CA_FILE {} is not a PEM bundle: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(GraphError::Auth(format!(
            "DORMANT_CA_FILE {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The same client as the Azure SDK's transport, so credentials and Key Vault
/// trust the same roots (azure_core implements `HttpClient` for `reqwest::Client`).
pub fn sdk_transport(client: &reqwest::Client) -> azure_core::http::Transport {
    azure_core::http::Transport::new(Arc::new(client.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_ca_file_is_an_error_not_a_panic() {
        assert!(load_pem_certs(Path::new("/nonexistent/ca.pem")).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not pem").expect("write");
        assert!(load_pem_certs(&p).is_err());
    }

    #[test]
    fn ca_file_certs_are_loaded() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, format!("{}{}", cert.pem(), cert.pem())).expect("write");
        assert_eq!(load_pem_certs(&p).expect("loads").len(), 2);
        build_http_client(Some(&p)).expect("client builds");
    }
}
