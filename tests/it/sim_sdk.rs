//! The Azure SDK for Rust (azure_identity + Key Vault secrets) against the simulator:
//! ClientSecretCredential gets a token from the simulated authority, and
//! SecretClient follows the Key Vault 401 challenge to read the app's secret.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use crate::sim_harness::{Harness, client_for};

fn sdk_options(h: &Harness) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = h.sim.base_url();
    let cloud: CloudConfiguration = cloud.into();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(client_for(&h.sim)))),
        cloud: Some(Arc::new(cloud)),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn azure_sdk_credential_and_key_vault_secret_client_work_against_the_simulator() {
    let h = Harness::workforce(20).await;
    let credential = ClientSecretCredential::new(
        &h.sim.tenant_id(),
        h.sim.client_id(),
        Secret::new(h.sim.client_secret()),
        Some(ClientSecretCredentialOptions {
            client_options: sdk_options(&h),
        }),
    )
    .expect("credential");
    let token = credential
        .get_token(&["https://graph.microsoft.com/.default"], None)
        .await
        .expect("graph token");
    let (s, _, _) = h.get(token.token.secret(), "/v1.0/users?$top=1").await;
    assert_eq!(s, 200);

    let secrets = SecretClient::new(
        &h.sim.base_url(),
        credential.clone(),
        Some(SecretClientOptions {
            client_options: sdk_options(&h),
            // The challenge names https://vault.azure.net, not 127.0.0.1 (FACTS.md).
            verify_challenge_resource: Some(false),
            ..SecretClientOptions::default()
        }),
    )
    .expect("secret client");
    let secret = secrets
        .get_secret("dormant-client-secret", None)
        .await
        .expect("get_secret")
        .into_model()
        .expect("secret bundle");
    assert_eq!(
        secret.value.as_deref(),
        Some(h.sim.client_secret().as_str())
    );

    // A wrong secret surfaces AADSTS7000215 through the SDK's error.
    let wrong = ClientSecretCredential::new(
        &h.sim.tenant_id(),
        h.sim.client_id(),
        Secret::new("wrong".to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: sdk_options(&h),
        }),
    )
    .expect("credential");
    let err = wrong
        .get_token(&["https://graph.microsoft.com/.default"], None)
        .await
        .expect_err("wrong secret fails");
    assert!(format!("{err:?}").contains("AADSTS7000215"), "{err:?}");
    h.sim.shutdown().await;
}
