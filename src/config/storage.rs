//! Where the store lives: a storage account (connection string or managed
//! identity) or a local directory, chosen the way the Functions host does.

use std::path::PathBuf;

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use url::Url;

/// A storage setting that does not hold (the message names the setting,
/// never its value: a connection string carries the account key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageSettingError(pub String);

type Result<T, E = StorageSettingError> = std::result::Result<T, E>;

/// The setting the Functions host and dormant read for the storage account.
pub const CONNECTION_SETTING: &str = "AzureWebJobsStorage";
/// Managed identity: blob service URI (identity-based connection of the host).
pub const BLOB_URI_SETTING: &str = "AzureWebJobsStorage__blobServiceUri";
/// Managed identity: queue service URI.
pub const QUEUE_URI_SETTING: &str = "AzureWebJobsStorage__queueServiceUri";
/// The local store's root when no storage account is configured.
pub const STORE_DIR_SETTING: &str = "DORMANT_STORE_DIR";
/// Default local store root (relative to the working directory).
pub const DEFAULT_STORE_DIR: &str = "./dormant-data";

/// Azurite's fixed development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_BLOB: &str = "http://127.0.0.1:10000/devstoreaccount1";
const DEV_QUEUE: &str = "http://127.0.0.1:10001/devstoreaccount1";

/// How to reach storage. `Debug` never shows the connection string.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// `AzureWebJobsStorage` connection string (account key or
    /// `UseDevelopmentStorage=true`). Validated when the config is built.
    ConnectionString(SecretString),
    /// Identity-based connection: the caller supplies the token credential.
    ManagedIdentity { blob: Url, queue: Url },
    /// The embedded local directory store.
    Local(PathBuf),
}

impl StorageConfig {
    /// Picks the backend from settings, in the host's order: a connection
    /// string if `AzureWebJobsStorage` is set, else both managed-identity
    /// service URIs, else `DORMANT_STORE_DIR` (default `./dormant-data`).
    /// `lookup` is usually `|k| std::env::var(k).ok()`; tests pass a map.
    /// Empty values count as unset (app settings are often blanked, not removed).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if let Some(conn) = get(CONNECTION_SETTING) {
            let conn = SecretString::from(conn);
            // Fail at start (exit 2) rather than on the first request.
            AccountConnection::parse(&conn)?;
            return Ok(StorageConfig::ConnectionString(conn));
        }
        match (get(BLOB_URI_SETTING), get(QUEUE_URI_SETTING)) {
            (Some(blob), Some(queue)) => Ok(StorageConfig::ManagedIdentity {
                blob: parse_service_uri(BLOB_URI_SETTING, &blob)?,
                queue: parse_service_uri(QUEUE_URI_SETTING, &queue)?,
            }),
            (Some(_), None) => Err(StorageSettingError(format!(
                "{BLOB_URI_SETTING} is set but {QUEUE_URI_SETTING} is not; set both for a managed-identity connection"
            ))),
            (None, Some(_)) => Err(StorageSettingError(format!(
                "{QUEUE_URI_SETTING} is set but {BLOB_URI_SETTING} is not; set both for a managed-identity connection"
            ))),
            (None, None) => Ok(StorageConfig::Local(PathBuf::from(
                get(STORE_DIR_SETTING).unwrap_or_else(|| DEFAULT_STORE_DIR.to_owned()),
            ))),
        }
    }
}

fn parse_service_uri(key: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value.trim())
        .map_err(|e| StorageSettingError(format!("{key} is not a valid URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(StorageSettingError(format!(
            "{key} must be an https URL (tokens are never sent over plain http)"
        )));
    }
    if url.query().is_some() {
        return Err(StorageSettingError(format!(
            "{key} must not carry a query string"
        )));
    }
    Ok(trim_trailing_slash(url))
}

/// Azurite rejects `//` in paths and the SDK appends segments itself, so
/// service URLs are kept without a trailing slash.
pub fn trim_trailing_slash(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    url
}

/// A parsed account-key connection string. `Debug` redacts the key.
pub struct AccountConnection {
    pub account: String,
    pub key: SecretSlice<u8>,
    pub blob_endpoint: Url,
    pub queue_endpoint: Url,
}

impl std::fmt::Debug for AccountConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountConnection")
            .field("account", &self.account)
            .field("key", &"[redacted]")
            .field("blob_endpoint", &self.blob_endpoint.as_str())
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .finish()
    }
}

impl AccountConnection {
    /// Parses `Key=Value;…` (keys case-insensitive, values may contain `=`).
    /// Errors name the part that is wrong and never echo a value.
    pub fn parse(conn: &SecretString) -> Result<Self> {
        let err = |msg: String| StorageSettingError(format!("{CONNECTION_SETTING}: {msg}"));
        let mut protocol = None;
        let mut account = None;
        let mut key = None;
        let mut suffix = None;
        let mut blob = None;
        let mut queue = None;
        let mut dev = false;
        for part in conn.expose_secret().split(';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((name, value)) = part.split_once('=') else {
                return Err(err(format!(
                    "part {} is not Key=Value",
                    part_name_hint(part)
                )));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "defaultendpointsprotocol" => protocol = Some(value.to_ascii_lowercase()),
                "accountname" => account = Some(value.to_owned()),
                "accountkey" => key = Some(value.to_owned()),
                "endpointsuffix" => suffix = Some(value.to_owned()),
                "blobendpoint" => blob = Some(endpoint("BlobEndpoint", value)?),
                "queueendpoint" => queue = Some(endpoint("QueueEndpoint", value)?),
                // Files and tables are not used by dormant; accept them so the
                // portal's full connection string parses.
                "fileendpoint" | "tableendpoint" => {}
                "usedevelopmentstorage" => {
                    if !value.eq_ignore_ascii_case("true") {
                        return Err(err("UseDevelopmentStorage must be true when present".into()));
                    }
                    dev = true;
                }
                "sharedaccesssignature" => {
                    return Err(err(
                        "SharedAccessSignature connection strings are not supported; use AccountKey or a managed identity".into(),
                    ));
                }
                other => {
                    return Err(err(format!("unknown part {other:?}")));
                }
            }
        }
        if dev {
            let blob = blob.unwrap_or_else(|| Url::parse(DEV_BLOB).expect("constant URL"));
            let queue = queue.unwrap_or_else(|| Url::parse(DEV_QUEUE).expect("constant URL"));
            let key = base64::engine::general_purpose::STANDARD
                .decode(DEV_KEY)
                .expect("the development key is valid base64");
            return Ok(AccountConnection {
                account: DEV_ACCOUNT.to_owned(),
                key: SecretSlice::from(key),
                blob_endpoint: blob,
                queue_endpoint: queue,
            });
        }
        let account = account
            .filter(|a| !a.is_empty())
            .ok_or_else(|| err("AccountName is missing".into()))?;
        if !account
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(err(
                "AccountName must be lowercase letters and digits".into()
            ));
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| err("AccountKey is missing".into()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_err(|_| err("AccountKey is not valid base64".into()))?;
        let protocol = protocol.unwrap_or_else(|| "https".to_owned());
        if protocol != "https" && protocol != "http" {
            return Err(err("DefaultEndpointsProtocol must be https or http".into()));
        }
        let suffix = suffix.unwrap_or_else(|| "core.windows.net".to_owned());
        let derive = |service: &str, part: &str| {
            Url::parse(&format!("{protocol}://{account}.{service}.{suffix}"))
                .map_err(|_| err(format!("EndpointSuffix does not form a valid {part} URL")))
        };
        let blob_endpoint = match blob {
            Some(u) => u,
            None => derive("blob", "blob")?,
        };
        let queue_endpoint = match queue {
            Some(u) => u,
            None => derive("queue", "queue")?,
        };
        Ok(AccountConnection {
            account,
            key: SecretSlice::from(key),
            blob_endpoint,
            queue_endpoint,
        })
    }
}

/// Names a malformed part without echoing it (it could be a key fragment).
fn part_name_hint(part: &str) -> String {
    let head: String = part
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .take(24)
        .collect();
    if head.is_empty() {
        "(unnamed)".to_owned()
    } else {
        format!("starting with {head:?}")
    }
}

fn endpoint(part: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value).map_err(|_| {
        StorageSettingError(format!("{CONNECTION_SETTING}: {part} is not a valid URL"))
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(StorageSettingError(format!(
            "{CONNECTION_SETTING}: {part} must be http or https"
        )));
    }
    Ok(trim_trailing_slash(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "a2V5LWJ5dGVzLWZvci10ZXN0aW5nLW9ubHk="; // "key-bytes-for-testing-only"

    fn parse(s: &str) -> Result<AccountConnection> {
        AccountConnection::parse(&SecretString::from(s.to_owned()))
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn full_account_string_derives_endpoints() {
        let c = parse(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={KEY};EndpointSuffix=core.windows.net"
        ))
        .expect("valid");
        assert_eq!(c.account, "acme");
        assert_eq!(
            c.blob_endpoint.as_str(),
            "https://acme.blob.core.windows.net/"
        );
        assert_eq!(
            c.queue_endpoint.as_str(),
            "https://acme.queue.core.windows.net/"
        );
        assert_eq!(c.key.expose_secret(), b"key-bytes-for-testing-only");
    }

    #[test]
    fn sovereign_suffix_and_defaults() {
        let c = parse(&format!(
            "AccountName=acme;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn;"
        ))
        .expect("valid");
        assert_eq!(
            c.blob_endpoint.as_str(),
            "https://acme.blob.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn explicit_endpoints_win_and_lose_trailing_slash() {
        let c = parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1234/devstoreaccount1/;QueueEndpoint=http://127.0.0.1:1235/devstoreaccount1"
        ))
        .expect("valid");
        assert_eq!(
            c.blob_endpoint.as_str(),
            "http://127.0.0.1:1234/devstoreaccount1"
        );
        assert_eq!(
            c.queue_endpoint.as_str(),
            "http://127.0.0.1:1235/devstoreaccount1"
        );
    }

    #[test]
    fn development_storage_uses_azurite_account() {
        let c = parse("UseDevelopmentStorage=true").expect("valid");
        assert_eq!(c.account, "devstoreaccount1");
        assert_eq!(c.blob_endpoint.as_str(), DEV_BLOB);
        assert_eq!(c.queue_endpoint.as_str(), DEV_QUEUE);
        assert_eq!(c.key.expose_secret().len(), 64);
    }

    #[test]
    fn missing_key_is_named() {
        let e = parse("AccountName=acme").expect_err("no key").to_string();
        assert!(e.contains("AccountKey is missing"), "{e}");
    }

    #[test]
    fn bad_base64_is_named_without_echo() {
        let secret = "not*base64*secret-value";
        let e = parse(&format!("AccountName=acme;AccountKey={secret}"))
            .expect_err("bad key")
            .to_string();
        assert!(e.contains("AccountKey is not valid base64"), "{e}");
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn malformed_part_is_not_echoed() {
        let e = parse(&format!("AccountName=acme;AccountKey={KEY};garbagesecret"))
            .expect_err("bad part")
            .to_string();
        assert!(e.contains("not Key=Value"), "{e}");
        assert!(!e.contains(KEY), "{e}");
    }

    #[test]
    fn missing_account_and_sas_and_unknown_parts() {
        assert!(
            parse(&format!("AccountKey={KEY}"))
                .expect_err("x")
                .to_string()
                .contains("AccountName is missing")
        );
        assert!(
            parse("BlobEndpoint=https://x.blob.core.windows.net;SharedAccessSignature=sv=1")
                .expect_err("x")
                .to_string()
                .contains("SharedAccessSignature")
        );
        assert!(
            parse("Foo=bar")
                .expect_err("x")
                .to_string()
                .contains("\"foo\"")
        );
        assert!(
            parse("UseDevelopmentStorage=false")
                .expect_err("x")
                .to_string()
                .contains("UseDevelopmentStorage")
        );
    }

    #[test]
    fn debug_redacts_key() {
        let c = parse(&format!("AccountName=acme;AccountKey={KEY}")).expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(KEY) && dbg.contains("[redacted]"));
        let cfg = StorageConfig::from_lookup(lookup(&[(
            CONNECTION_SETTING,
            &format!("AccountName=acme;AccountKey={KEY}"),
        )]))
        .expect("valid");
        assert!(!format!("{cfg:?}").contains(KEY));
    }

    #[test]
    fn lookup_order_connection_then_identity_then_local() {
        let cfg = StorageConfig::from_lookup(lookup(&[
            (CONNECTION_SETTING, "UseDevelopmentStorage=true"),
            (BLOB_URI_SETTING, "https://a.blob.core.windows.net"),
            (QUEUE_URI_SETTING, "https://a.queue.core.windows.net"),
        ]))
        .expect("valid");
        assert!(matches!(cfg, StorageConfig::ConnectionString(_)));

        let cfg = StorageConfig::from_lookup(lookup(&[
            (BLOB_URI_SETTING, "https://a.blob.core.windows.net/"),
            (QUEUE_URI_SETTING, "https://a.queue.core.windows.net"),
        ]))
        .expect("valid");
        match cfg {
            StorageConfig::ManagedIdentity { blob, queue } => {
                assert_eq!(blob.as_str(), "https://a.blob.core.windows.net/");
                assert_eq!(queue.as_str(), "https://a.queue.core.windows.net/");
            }
            other => panic!("expected managed identity, got {other:?}"),
        }

        let cfg = StorageConfig::from_lookup(lookup(&[(CONNECTION_SETTING, "  ")]))
            .expect("blank counts as unset");
        assert!(
            matches!(cfg, StorageConfig::Local(p) if p == std::path::Path::new(DEFAULT_STORE_DIR))
        );

        let cfg = StorageConfig::from_lookup(lookup(&[(STORE_DIR_SETTING, "/var/dormant")]))
            .expect("valid");
        assert!(
            matches!(cfg, StorageConfig::Local(p) if p == std::path::Path::new("/var/dormant"))
        );
    }

    #[test]
    fn half_identity_config_and_bad_values_are_named() {
        let e = StorageConfig::from_lookup(lookup(&[(BLOB_URI_SETTING, "https://a")]))
            .expect_err("half")
            .to_string();
        assert!(e.contains(QUEUE_URI_SETTING), "{e}");
        let e = StorageConfig::from_lookup(lookup(&[
            (BLOB_URI_SETTING, "http://a.blob.core.windows.net"),
            (QUEUE_URI_SETTING, "https://a.queue.core.windows.net"),
        ]))
        .expect_err("http")
        .to_string();
        assert!(e.contains(BLOB_URI_SETTING) && e.contains("https"), "{e}");
        let e = StorageConfig::from_lookup(lookup(&[(CONNECTION_SETTING, "AccountName=x")]))
            .expect_err("bad conn")
            .to_string();
        assert!(
            e.contains("AzureWebJobsStorage") && e.contains("AccountKey"),
            "{e}"
        );
    }
}
