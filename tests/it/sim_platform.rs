//! Simulator platform behaviour: TLS, tokens, Key Vault, faults, throttling, clock, generator.

use std::time::{Duration, Instant};

use dormant::sim::{Faults, SimConfig, Tenant, TenantKind, ThrottleConfig};
use reqwest::Method;
use serde_json::json;

use crate::sim_harness::{Harness, assert_graph_error};

#[tokio::test]
async fn settings_name_every_contract_key_and_the_ca_file_is_a_pem() {
    let h = Harness::workforce(50).await;
    let s = h.sim.settings();
    for key in [
        "DORMANT_GRAPH_URL",
        "DORMANT_AUTHORITY_HOST",
        "DORMANT_TENANT_ID",
        "DORMANT_TENANT_KIND",
        "DORMANT_CREDENTIAL",
        "DORMANT_CLIENT_ID",
        "DORMANT_CLIENT_SECRET",
        "DORMANT_CA_FILE",
        "DORMANT_KEYVAULT_URL",
        "DORMANT_SIM_TRUTH",
    ] {
        assert!(
            s.iter().any(|(k, v)| k == key && !v.is_empty()),
            "missing {key}"
        );
    }
    assert!(h.base.starts_with("https://127.0.0.1:"));
    let pem = std::fs::read_to_string(h.sim.ca_file()).expect("CA file");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // A client that does not trust the CA is refused at the TLS layer.
    let plain = reqwest::Client::builder().build().expect("client");
    assert!(
        plain
            .get(format!("{}/v1.0/users", h.base))
            .send()
            .await
            .is_err()
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_gets_aadsts7000215_and_rotation_retires_the_old_secret() {
    let h = Harness::workforce(20).await;
    let (s, body) = h
        .token_raw("not-the-secret", "https://graph.microsoft.com/.default")
        .await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .expect("description")
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    assert_eq!(body["error_codes"], json!([7000215]));
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[k].is_string(), "{k} in {body}");
    }
    let (s, body) = h
        .token_raw(
            &h.sim.client_secret(),
            "https://graph.microsoft.com/.default",
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().expect("expires_in") > 0);
    let (s, body) = h
        .token_raw(
            &h.sim.client_secret(),
            "https://graph.microsoft.com/User.Read",
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_scope")));

    let old = h.sim.client_secret();
    let new = h.sim.rotate_secret();
    assert_ne!(old, new);
    assert_eq!(
        h.token_raw(&old, "https://graph.microsoft.com/.default")
            .await
            .0,
        401
    );
    assert_eq!(
        h.token_raw(&new, "https://graph.microsoft.com/.default")
            .await
            .0,
        200
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn graph_refuses_missing_expired_and_wrong_audience_tokens() {
    let h = Harness::workforce(20).await;
    let (s, headers, body) = h.get("", "/v1.0/users").await;
    assert_eq!(s, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
    assert!(headers.get("www-authenticate").is_some());

    h.sim.set_token_lifetime(60);
    let tok = h.token().await;
    assert_eq!(h.get(&tok, "/v1.0/users?$top=1").await.0, 200);
    h.sim.advance(Duration::from_secs(61));
    let (s, _, body) = h.get(&tok, "/v1.0/users?$top=1").await;
    assert_eq!(s, 401);
    assert_eq!(
        body["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );

    let vault = h.token_for("https://vault.azure.net/.default").await;
    let (s, _, body) = h.get(&vault, "/v1.0/users").await;
    assert_eq!(s, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn key_vault_challenges_then_serves_the_current_secret() {
    let h = Harness::workforce(20).await;
    let url = format!("{}/secrets/dormant-client-secret?api-version=7.5", h.base);
    let r = h.http.get(&url).send().await.expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        challenge,
        format!(
            r#"Bearer authorization="{}/{}", resource="https://vault.azure.net""#,
            h.base,
            h.sim.tenant_id()
        )
    );
    let graph = h.token().await;
    assert_eq!(
        h.http
            .get(&url)
            .bearer_auth(&graph)
            .send()
            .await
            .expect("req")
            .status()
            .as_u16(),
        401
    );
    let vault = h.token_for("https://vault.azure.net/.default").await;
    let (s, _, body) = h.get(&vault, &url).await;
    assert_eq!(s, 200);
    assert_eq!(body["value"], h.sim.client_secret());
    assert!(
        body["id"]
            .as_str()
            .expect("id")
            .contains("/secrets/dormant-client-secret/")
    );
    assert_eq!(body["attributes"]["enabled"], true);
    let new = h.sim.rotate_secret();
    assert_eq!(h.get(&vault, &url).await.2["value"], new);
    let (s, _, body) = h
        .get(&vault, &format!("{}/secrets/nope?api-version=7.5", h.base))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("SecretNotFound"))
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn faults_503_reset_truncate_stuck_and_latency() {
    let h = Harness::workforce(200).await;
    let tok = h.token().await;
    h.sim.set_faults(Faults {
        next_503: 1,
        ..Faults::default()
    });
    let (s, headers, body) = h.get(&tok, "/v1.0/users").await;
    assert_eq!(s, 503);
    assert!(headers.get("retry-after").is_some());
    assert_graph_error(&body, "serviceNotAvailable");
    assert_eq!(h.get(&tok, "/v1.0/users").await.0, 200);

    h.sim.set_faults(Faults {
        next_reset: 1,
        ..Faults::default()
    });
    assert!(
        h.http
            .get(format!("{}/v1.0/users", h.base))
            .bearer_auth(&tok)
            .send()
            .await
            .is_err()
    );

    h.sim.set_faults(Faults {
        next_truncate: 1,
        ..Faults::default()
    });
    let outcome = match h
        .http
        .get(format!("{}/v1.0/users?$top=999", h.base))
        .bearer_auth(&tok)
        .send()
        .await
    {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(outcome, "a truncated body must fail to read");

    h.sim.set_faults(Faults {
        next_stuck: 1,
        stuck_secs: 30,
        path_contains: Some("/users".into()),
        ..Faults::default()
    });
    let stuck = h
        .http
        .get(format!("{}/v1.0/users", h.base))
        .bearer_auth(&tok)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(stuck.is_err_and(|e| e.is_timeout()));
    // The path filter spares other paths.
    h.sim.set_faults(Faults {
        next_503: 5,
        path_contains: Some("/groups".into()),
        ..Faults::default()
    });
    assert_eq!(h.get(&tok, "/v1.0/users").await.0, 200);

    h.sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(h.get(&tok, "/v1.0/users?$top=1").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(h.sim.stats().faults_injected >= 4);

    // The control API steers an out-of-process simulator the same way.
    let r = h
        .http
        .post(format!("{}/_sim/faults", h.base))
        .json(&json!({"next503": 1}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(h.get(&tok, "/v1.0/users").await.0, 503);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn resource_unit_budget_throttles_with_retry_after_and_recovers_with_the_clock() {
    let h = Harness::workforce(100).await;
    let tok = h.token().await;
    // GET users costs 2 units, 1 with $select: a budget of 6 allows 3 plain list calls.
    h.sim.set_throttle(ThrottleConfig {
        resource_units_per_10s: Some(6),
        ..ThrottleConfig::default()
    });
    for _ in 0..3 {
        let (s, headers, _) = h.get(&tok, "/v1.0/users").await;
        assert_eq!(s, 200);
        assert_eq!(headers["x-ms-resource-unit"], "2");
    }
    let (s, headers, body) = h.get(&tok, "/v1.0/users").await;
    assert_eq!(s, 429);
    assert_graph_error(&body, "TooManyRequests");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    assert!(headers.get("x-ms-throttle-scope").is_some());
    assert_eq!(h.sim.stats().throttled, 1);
    h.sim.advance(Duration::from_secs(retry));
    assert_eq!(h.get(&tok, "/v1.0/users").await.0, 200);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn audit_log_and_b2c_budgets() {
    let h = Harness::workforce(30).await;
    let tok = h.token().await;
    for _ in 0..5 {
        assert_eq!(h.get(&tok, "/v1.0/auditLogs/directoryAudits").await.0, 200);
    }
    let (s, headers, _) = h.get(&tok, "/v1.0/auditLogs/directoryAudits").await;
    assert_eq!(s, 429);
    assert!(headers.get("retry-after").is_some());
    h.sim.shutdown().await;

    let h = Harness::start(SimConfig {
        users: 30,
        kind: TenantKind::B2c,
        throttle: ThrottleConfig {
            b2c_per_second: 3,
            ..ThrottleConfig::default()
        },
        ..SimConfig::default()
    })
    .await;
    let tok = h.token().await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(h.get(&tok, "/v1.0/users?$top=1").await.0);
    }
    assert_eq!(codes, vec![200, 200, 200, 429]);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn control_api_moves_the_clock_and_reports_stats() {
    let h = Harness::workforce(20).await;
    let before = h.sim.now();
    let r = h
        .http
        .post(format!("{}/_sim/clock/advance", h.base))
        .json(&json!({"seconds": 86400}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status().as_u16(), 200);
    assert!(h.sim.now() - before >= chrono::TimeDelta::seconds(86_400));
    let stats: serde_json::Value = h
        .http
        .get(format!("{}/_sim/stats", h.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert!(stats["requests"].as_u64().expect("requests") >= 1);
    let r = h
        .http
        .delete(format!("{}/_sim/stats", h.base))
        .send()
        .await
        .expect("reset");
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(h.sim.stats().graph_requests, 0);
    h.sim.shutdown().await;
}

fn truth_bytes(kind: TenantKind, seed: u64, n: u32) -> Vec<u8> {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
        .expect("date")
        .to_utc();
    let t = Tenant::generate(kind, n, seed, start);
    let mut out = Vec::new();
    t.write_truth(&mut out).expect("truth");
    out
}

#[test]
fn same_seed_same_tenant_and_upns_are_legal_and_spread() {
    for kind in [TenantKind::Workforce, TenantKind::B2c] {
        let a = truth_bytes(kind, 7, 2000);
        assert_eq!(a, truth_bytes(kind, 7, 2000));
        assert_ne!(a, truth_bytes(kind, 8, 2000));
    }
    let text = String::from_utf8(truth_bytes(TenantKind::Workforce, 7, 5000)).expect("utf8");
    let mut firsts = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let upn = v["upn"].as_str().expect("upn");
        let (local, domain) = upn.split_once('@').expect("@");
        assert!(!local.starts_with('.'), "{upn}");
        assert!(
            local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c)),
            "{upn}"
        );
        assert!(domain.ends_with(".onmicrosoft.com"));
        firsts.insert(
            local
                .chars()
                .next()
                .expect("non-empty")
                .to_ascii_lowercase(),
        );
        for k in v["kinds"].as_array().expect("kinds") {
            kinds.insert(k.as_str().expect("str").to_string());
        }
    }
    assert!(firsts.len() >= 20, "{firsts:?}");
    for k in [
        "active",
        "inactive",
        "never-signed-in-old",
        "never-signed-in-new",
        "no-signin-data",
        "failed-signins-only",
        "executive",
        "service-account",
        "shared-mailbox",
        "room-mailbox",
        "privileged-role",
        "break-glass",
        "guest-pending",
        "guest-accepted",
        "guest-viral",
        "on-premises-synced",
        "recently-reenabled",
    ] {
        assert!(kinds.contains(k), "missing {k}: {kinds:?}");
    }
}

#[test]
fn a_million_users_generate_in_seconds() {
    let t = Instant::now();
    let tenant = Tenant::generate(TenantKind::Workforce, 1_000_000, 1, chrono::Utc::now());
    let took = t.elapsed();
    eprintln!(
        "generated 1,000,000 users in {took:?} ({} bytes per record)",
        std::mem::size_of_val(&tenant.users[0])
    );
    assert_eq!(tenant.users.len(), 1_000_000);
    assert!(std::mem::size_of_val(&tenant.users[0]) <= 96);
    // Debug builds are ~10x slower than release; release does this well under a second.
    assert!(took < Duration::from_secs(30), "{took:?}");
    let _ = Method::GET;
}

#[tokio::test]
async fn serves_h2_via_alpn_and_http1() {
    let h = Harness::workforce(20).await;
    let r = h
        .http
        .get(format!("{}/_sim/clock", h.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let ca = reqwest::Certificate::from_pem(h.sim.ca_pem().as_bytes()).expect("pem");
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .expect("client");
    let r = h1
        .get(format!("{}/_sim/clock", h.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn client_assertion_must_name_the_app() {
    use base64::Engine;
    let h = Harness::workforce(20).await;
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let url = format!("{}/{}/oauth2/v2.0/token", h.base, h.sim.tenant_id());
    for (sub, want) in [
        (h.sim.client_id(), 200u16),
        ("someone-else".to_string(), 401),
    ] {
        let assertion = format!(
            "{}.{}.c2ln",
            enc(json!({"alg": "RS256", "typ": "JWT"})),
            enc(json!({"iss": h.sim.client_id(), "sub": sub, "aud": url}))
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "client_credentials"),
                ("client_id", h.sim.client_id().as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .finish();
        let r = h
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token");
        assert_eq!(r.status().as_u16(), want);
    }
    h.sim.shutdown().await;
}

#[test]
fn sim_args_parse_into_a_config() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: dormant::sim::SimArgs,
    }
    let cli = Cli::try_parse_from([
        "dormant",
        "--users",
        "10",
        "--kind",
        "b2c",
        "--port",
        "0",
        "--seed",
        "5",
        "--no-throttle",
        "--latency-ms",
        "3",
    ])
    .expect("flags parse");
    let cfg = SimConfig::from(cli.sim);
    assert_eq!(
        (
            cfg.users,
            cfg.kind,
            cfg.seed,
            cfg.throttle.enabled,
            cfg.faults.latency_ms
        ),
        (10, TenantKind::B2c, 5, false, 3)
    );
    assert!(Cli::try_parse_from(["dormant", "--kind", "consumer"]).is_err());
}

#[tokio::test]
async fn run_prints_the_contract_settings_then_serves_until_told_to_stop() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: dormant::sim::SimArgs,
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let args = Cli::try_parse_from([
        "dormant",
        "--users",
        "25",
        "--seed",
        "3",
        "--dir",
        dir.path().to_str().expect("utf8"),
    ])
    .expect("args")
    .sim;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (out_tx, out_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    // Hand the printed settings over as soon as they are flushed.
    struct Tee(Vec<u8>, Option<tokio::sync::oneshot::Sender<Vec<u8>>>);
    impl std::io::Write for Tee {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if let Some(tx) = self.1.take() {
                let _ = tx.send(self.0.clone());
            }
            Ok(())
        }
    }
    let server = tokio::spawn(async move {
        let mut tee = Tee(Vec::new(), Some(out_tx));
        dormant::sim::run_until(args, &mut tee, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let printed = String::from_utf8(out_rx.await.expect("settings printed")).expect("utf8");
    let lines: Vec<&str> = printed.lines().collect();
    assert!(lines[0].starts_with("DORMANT_GRAPH_URL=https://127.0.0.1:"));
    let get = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .expect(k)
            .to_string()
    };
    assert_eq!(get("DORMANT_TENANT_KIND"), "workforce");
    assert_eq!(get("DORMANT_CREDENTIAL"), "client-secret");
    assert!(std::path::Path::new(&get("DORMANT_CA_FILE")).starts_with(dir.path()));
    let truth = std::fs::read_to_string(get("DORMANT_SIM_TRUTH")).expect("truth");
    assert_eq!(truth.lines().count(), 25);
    // It is really serving.
    let ca = reqwest::Certificate::from_pem(
        std::fs::read(get("DORMANT_CA_FILE"))
            .expect("ca")
            .as_slice(),
    )
    .expect("pem");
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let r = http
        .get(format!("{}/_sim/clock", get("DORMANT_GRAPH_URL")))
        .send()
        .await
        .expect("serving");
    assert_eq!(r.status().as_u16(), 200);
    stop_tx.send(()).expect("stop");
    server.await.expect("join").expect("run ok");
}

#[tokio::test]
async fn user_id_tokens_verify_against_the_published_jwks() {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = Harness::start(SimConfig {
        users: 40,
        kind: TenantKind::B2c,
        ..SimConfig::default()
    })
    .await;
    let settings: std::collections::HashMap<String, String> =
        h.sim.settings().into_iter().collect();
    let meta: serde_json::Value = h
        .http
        .get(&settings["DORMANT_GDPR_METADATA_URL"])
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["issuer"], settings["DORMANT_GDPR_ISSUER"].as_str());
    let jwks: serde_json::Value = h
        .http
        .get(meta["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "RSA");

    let user = h.truth()[7]["id"].as_str().expect("id").to_string();
    let token = h
        .sim
        .issue_user_token(&user, None, Duration::from_secs(120))
        .expect("token");
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), jwk["kid"].as_str())
    );
    let key = RsaPublicKeyComponents {
        n: b64.decode(jwk["n"].as_str().expect("n")).expect("n"),
        e: b64.decode(jwk["e"].as_str().expect("e")).expect("e"),
    };
    let signed = format!("{}.{}", parts[0], parts[1]);
    key.verify(
        &RSA_PKCS1_2048_8192_SHA256,
        signed.as_bytes(),
        &b64.decode(parts[2]).expect("sig"),
    )
    .expect("signature verifies");
    let claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(claims["oid"], user.as_str());
    assert_eq!(claims["aud"], settings["DORMANT_GDPR_AUDIENCE"].as_str());
    assert_eq!(claims["iss"], settings["DORMANT_GDPR_ISSUER"].as_str());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        3600
    );
    assert_eq!(
        claims["iat"].as_i64().expect("iat") - claims["auth_time"].as_i64().expect("auth_time"),
        120
    );
    // Through the control API too, with another audience.
    let r: serde_json::Value = h
        .http
        .post(format!("{}/_sim/users/{user}/id-token", h.base))
        .json(&json!({"audience": "other-app"}))
        .send()
        .await
        .expect("control")
        .json()
        .await
        .expect("json");
    let claims = r["idToken"]
        .as_str()
        .expect("idToken")
        .split('.')
        .nth(1)
        .map(|p| b64.decode(p).expect("b64"))
        .expect("claims");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&claims).expect("json")["aud"],
        "other-app"
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn managed_identity_endpoint_serves_vault_tokens_like_app_service() {
    let h = Harness::workforce(20).await;
    let settings: std::collections::HashMap<String, String> =
        h.sim.settings().into_iter().collect();
    let endpoint = &settings["IDENTITY_ENDPOINT"];
    let url = format!("{endpoint}?api-version=2019-08-01&resource=https://vault.azure.net");
    assert_eq!(
        h.http
            .get(&url)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16(),
        401
    );
    let body: serde_json::Value = h
        .http
        .get(&url)
        .header("X-IDENTITY-HEADER", &settings["IDENTITY_HEADER"])
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        body["expires_on"]
            .as_str()
            .expect("expires_on is a string")
            .parse::<i64>()
            .is_ok()
    );
    let token = body["access_token"].as_str().expect("token");
    let (s, _, secret) = h
        .get(
            token,
            &format!("{}/secrets/dormant-client-secret?api-version=7.5", h.base),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(secret["value"], h.sim.client_secret());
    h.sim.shutdown().await;
}
