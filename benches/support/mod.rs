//! What the benchmarks share: free ports, child processes, memory readings,
//! and the HTTPS stand-in the tests use.
// Each bench is its own crate and uses only part of this.
#![allow(dead_code)]

use std::process::Child;

#[path = "../../tests/support/https.rs"]
pub mod https;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A `/proc/{pid}/status` memory field (`VmRSS`, `VmHWM`) in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// A peer's HTTP client trusting the simulator's CA, and its Graph bearer
/// (client credentials against the simulator's token endpoint).
pub async fn sim_client(sim: &dormant::sim::Sim) -> (reqwest::Client, String) {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA");
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let token: serde_json::Value = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            sim.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "client_credentials"),
                    ("client_id", sim.client_id().as_str()),
                    ("client_secret", sim.client_secret().as_str()),
                    ("scope", "https://graph.microsoft.com/.default"),
                ])
                .finish(),
        )
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token body");
    let bearer = format!("Bearer {}", token["access_token"].as_str().expect("token"));
    (http, bearer)
}
