//! The simulator's own certificate authority and server certificate.
//!
//! Clients must reach the simulator over HTTPS exactly as they reach
//! graph.microsoft.com (the Azure SDK credentials refuse plain http), so the
//! simulator mints a CA at start, writes it to a PEM file the client is told to
//! trust (`DORMANT_CA_FILE`), and serves a leaf for `127.0.0.1`/`localhost`.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated CA (PEM) and a ready server configuration.
pub struct SimTls {
    pub ca_pem: String,
    pub server: Arc<ServerConfig>,
}

/// Mint a CA and a leaf for the loopback names, valid from yesterday for a year.
pub fn generate() -> anyhow::Result<SimTls> {
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dormant simulator root CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "dormant sim");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = now - day;
    ca_params.not_after = now + day * 365;
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).context("leaf params")?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - day;
    leaf.not_after = now + day * 365;
    let leaf_key = KeyPair::generate().context("leaf key")?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).context("sign leaf")?;

    let chain = vec![
        CertificateDer::from(leaf_cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server certificate")?;
    // h2 first, as Azure front doors negotiate it; http/1.1 for everyone else.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SimTls {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    })
}
