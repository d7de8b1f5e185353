//! Shared harness for the simulator tests: start a simulator, trust its CA, get tokens.

use dormant::sim::{Sim, SimConfig};
use serde_json::Value;

pub struct Harness {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub base: String,
}

pub fn client_for(sim: &Sim) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

impl Harness {
    pub async fn start(cfg: SimConfig) -> Harness {
        let sim = Sim::start(cfg).await.expect("simulator starts");
        let http = client_for(&sim);
        let base = sim.base_url();
        Harness { sim, http, base }
    }

    pub async fn workforce(users: u32) -> Harness {
        Harness::start(SimConfig {
            users,
            ..SimConfig::default()
        })
        .await
    }

    /// POST the token endpoint; returns (status, body).
    pub async fn token_raw(&self, secret: &str, scope: &str) -> (u16, Value) {
        let url = format!("{}/{}/oauth2/v2.0/token", self.base, self.sim.tenant_id());
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", &self.sim.client_id()),
            ("client_secret", secret),
            ("scope", scope),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("token body is JSON"))
    }

    pub async fn token(&self) -> String {
        self.token_for("https://graph.microsoft.com/.default").await
    }

    pub async fn token_for(&self, scope: &str) -> String {
        let (s, body) = self.token_raw(&self.sim.client_secret(), scope).await;
        assert_eq!(s, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// GET a Graph URL (absolute or relative to the base) with a token.
    pub async fn get(&self, token: &str, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{}", self.base, url)
        };
        let r = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    pub async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, url))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// The ground truth, one JSON object per user.
    pub fn truth(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.sim.truth_file()).expect("truth file");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("truth line"))
            .collect()
    }

    /// Follow `@odata.nextLink` to the end; returns all values and the page sizes.
    pub async fn page_all(&self, token: &str, first: &str) -> (Vec<Value>, Vec<usize>) {
        let mut url = first.to_string();
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let (s, _, body) = self.get(token, &url).await;
            assert_eq!(s, 200, "{body}");
            let v = body["value"].as_array().expect("value").clone();
            sizes.push(v.len());
            all.extend(v);
            match body["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        (all, sizes)
    }
}

/// Assert a Graph error body: `{"error":{"code","message","innerError":{"request-id",...}}}`.
pub fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        body["error"]["innerError"]["request-id"].is_string(),
        "{body}"
    );
    assert!(body["error"]["innerError"]["date"].is_string(), "{body}");
}

/// dormant's configuration pointed at `sim`, on a local store in `dir`,
/// with `extra` settings on top (an empty value takes a setting away).
pub fn config_for(
    sim: &Sim,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> dormant::config::Config {
    let mut env = sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.display().to_string()));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        if !v.is_empty() {
            env.push(((*k).into(), (*v).into()));
        }
    }
    dormant::config::Config::load(&dormant::config::Sources::from_env(None, env))
        .expect("config from the simulator's settings")
}
