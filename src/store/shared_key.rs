//! Shared Key authorization for the Blob and Queue services.
//!
//! The official 1.x storage crates authenticate only with Entra tokens or SAS
//! (Azure/azure-sdk-for-rust#2975), but `AzureWebJobsStorage` connection
//! strings and Azurite carry an account key. This policy signs each try
//! (it sits in `ClientOptions::per_try_policies`, after the retry policy, so a
//! retried request gets a fresh `x-ms-date` and signature) following
//! "Authorize with Shared Key" (service version 2015-02-21 and later).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::{
    Context, Method, Request, Url,
    policies::{Policy, PolicyResult},
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretSlice};
use sha2::Sha256;

/// Signs requests with `Authorization: SharedKey {account}:{signature}`.
pub(crate) struct SharedKeyPolicy {
    account: String,
    key: SecretSlice<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl SharedKeyPolicy {
    pub fn new(account: String, key: SecretSlice<u8>) -> Self {
        Self { account, key }
    }

    fn sign(&self, string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        request.insert_header("x-ms-date", date);
        let body_len = request.body().len().unwrap_or(0);
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_ascii_lowercase(), v.as_str().to_owned()))
            .collect();
        let to_sign = string_to_sign(
            request.method(),
            request.url(),
            &headers,
            body_len,
            &self.account,
        );
        let signature = self.sign(&to_sign);
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{}", self.account, signature),
        );
        match next.split_first() {
            Some((policy, rest)) => policy.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "the SharedKey policy must not be the last policy in the pipeline",
            )),
        }
    }
}

/// Builds the string to sign for Blob/Queue Shared Key (not Shared Key Lite).
///
/// `headers` are lowercase names. `body_len` is used when no
/// `content-length` header was set; a zero length signs as an empty line
/// (required since version 2015-02-21).
pub(crate) fn string_to_sign(
    method: Method,
    url: &Url,
    headers: &[(String, String)],
    body_len: u64,
    account: &str,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let content_length = match header("content-length").as_str() {
        "" | "0" if body_len == 0 => String::new(),
        "" => body_len.to_string(),
        "0" => String::new(),
        other => other.to_owned(),
    };
    // `Date` stays empty: we always send x-ms-date, which is signed below.
    let mut out = String::new();
    for line in [
        method.as_ref().to_owned(),
        header("content-encoding"),
        header("content-language"),
        content_length,
        header("content-md5"),
        header("content-type"),
        String::new(),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&canonicalized_headers(headers));
    out.push_str(&canonicalized_resource(url, account));
    out
}

/// Every `x-ms-*` header, lowercase, sorted, value trimmed with inner runs
/// of whitespace folded to one space, one `name:value\n` each.
fn canonicalized_headers(headers: &[(String, String)]) -> String {
    let mut ms: Vec<(&str, String)> = headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .map(|(n, v)| {
            (
                n.as_str(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort_by(|a, b| a.0.cmp(b.0));
    ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// `/{account}{encoded path}` then each query parameter as `\nname:v1,v2`
/// (names lowercase and sorted, values decoded and sorted). Against the
/// emulator's path-style URLs the account appears twice, as the spec says.
fn canonicalized_resource(url: &Url, account: &str) -> String {
    let path = if url.path().is_empty() {
        "/"
    } else {
        url.path()
    };
    let mut out = format!("/{account}{path}");
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn put_block_list_against_path_style_url() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/dormant-reports/run%201/report.csv?comp=blocklist&timeout=30",
        )
        .expect("url");
        let headers = h(&[
            ("content-length", "42"),
            ("content-type", "application/xml"),
            ("if-match", "\"0x8D\""),
            ("x-ms-version", "2026-04-06"),
            ("x-ms-date", "Sun, 22 Nov 2026 04:00:00 GMT"),
            ("x-ms-client-request-id", "  abc   def "),
            ("user-agent", "not signed"),
        ]);
        let s = string_to_sign(Method::Put, &url, &headers, 42, "devstoreaccount1");
        assert_eq!(
            s,
            "PUT\n\n\n42\n\napplication/xml\n\n\n\"0x8D\"\n\n\n\n\
             x-ms-client-request-id:abc def\n\
             x-ms-date:Sun, 22 Nov 2026 04:00:00 GMT\n\
             x-ms-version:2026-04-06\n\
             /devstoreaccount1/devstoreaccount1/dormant-reports/run%201/report.csv\n\
             comp:blocklist\n\
             timeout:30"
        );
    }

    #[test]
    fn zero_length_signs_empty_and_query_values_sort_and_decode() {
        let url = Url::parse(
            "https://acme.queue.core.windows.net/dormant-actions/messages?VisibilityTimeout=30&numofmessages=5&include=b&include=a%2Cz",
        )
        .expect("url");
        let headers = h(&[("content-length", "0"), ("x-ms-date", "d")]);
        let s = string_to_sign(Method::Get, &url, &headers, 0, "acme");
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:d\n\
             /acme/dormant-actions/messages\n\
             include:a,z,b\n\
             numofmessages:5\n\
             visibilitytimeout:30"
        );
    }

    #[test]
    fn service_root_resource_is_slash() {
        let url = Url::parse("https://acme.blob.core.windows.net/?comp=list").expect("url");
        let s = string_to_sign(Method::Get, &url, &[], 0, "acme");
        assert!(s.ends_with("\n/acme/\ncomp:list"), "{s}");
    }

    /// Known answer computed independently (Python `hmac` + `base64`) for the
    /// Azurite development key over the string "GET\n".
    #[test]
    fn signature_known_answer() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
            .expect("dev key");
        let p = SharedKeyPolicy::new("devstoreaccount1".into(), SecretSlice::from(key));
        assert_eq!(p.sign("GET\n"), KNOWN_SIGNATURE);
        assert!(!format!("{p:?}").contains("Eby8"));
    }

    const KNOWN_SIGNATURE: &str = "/ZZsmidvu/o1IWuAI6fRY2fmdvnXEMtMILD8Y+sZWjA=";
}
