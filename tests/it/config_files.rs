//! The example files we ship are valid as shipped.

use dormant::config::{Config, Mode, Sources};

use crate::harness::{TENANT, repo_root};

#[test]
fn dormant_toml_example_loads_once_a_tenant_is_named() {
    let text = std::fs::read_to_string(repo_root().join("dormant.toml.example")).expect("example");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dormant.toml");
    std::fs::write(
        &path,
        text.replace("00000000-0000-0000-0000-000000000000", TENANT),
    )
    .expect("write");
    let config = Config::load(&Sources::from_env(Some(path), vec![])).expect("example loads");
    assert_eq!(
        config.policy.mode,
        Mode::Report,
        "the example ships in report mode"
    );
}

#[test]
fn local_settings_example_values_load() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("local.settings.example.json")).expect("file"),
    )
    .expect("json");
    let env: Vec<(String, String)> = json["Values"]
        .as_object()
        .expect("Values")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .map(|(k, v)| match k.as_str() {
            "DORMANT_TENANT_ID" | "DORMANT_CLIENT_ID" => (k, TENANT.to_owned()),
            "DORMANT_KEYVAULT_URL" => (k, "https://example.vault.azure.net".to_owned()),
            _ => (k, v),
        })
        .collect();
    Config::load(&Sources::from_env(None, env)).expect("local settings load");
}
