//! JSON `$batch`: at most 20 requests per call; each answer carries its own
//! status, and a 429 or 5xx inside a batch is retried on its own (only the
//! failed items), within the pacer's bounded time. Results come back in the
//! order the requests were given.

use super::client::{GraphClient, GraphRequest};
use super::error::{GraphError, Verdict, classify, decode_failure, parse_retry_after};
use super::pacer::RequestClass;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Graph: "JSON batch requests are currently limited to 20 individual requests".
pub const MAX_BATCH: usize = 20;

/// Most rounds of re-sending failed items of one batch.
const MAX_ROUNDS: u32 = 8;

/// One request inside a batch. `url` is relative to the version root
/// (`/users/{id}?$select=id`), as `$batch` requires.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub method: Method,
    pub url: String,
    pub body: Option<serde_json::Value>,
}

impl BatchItem {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            url: url.into(),
            body: None,
        }
    }

    fn class(&self) -> RequestClass {
        if self.method == Method::GET {
            RequestClass::ReadOne
        } else {
            RequestClass::Write
        }
    }
}

/// The answer to one batch item.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItemResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Option<serde_json::Value>,
}

impl BatchItemResponse {
    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GraphError> {
        let body = self.body.clone().unwrap_or(serde_json::Value::Null);
        serde_json::from_value(body).map_err(|e| {
            GraphError::permanent(
                self.status,
                "UnexpectedResponse",
                format!("the answer is {}", decode_failure(&e)),
            )
        })
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    id: String,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<HashMap<&'static str, &'static str>>,
}

#[derive(Serialize)]
struct WireBatch<'a> {
    requests: Vec<WireRequest<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireResponses {
    responses: Vec<WireResponse>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireResponse {
    id: String,
    status: u16,
    headers: HashMap<String, String>,
    body: Option<serde_json::Value>,
}

/// Builds the `$batch` body for `items[indices]`; item ids are their index in
/// the caller's list so answers can be put back in order.
pub(crate) fn build_batch_body(
    items: &[BatchItem],
    indices: &[usize],
) -> Result<Vec<u8>, GraphError> {
    let requests = indices
        .iter()
        .map(|&i| {
            let item = &items[i];
            WireRequest {
                id: i.to_string(),
                method: item.method.as_str(),
                url: &item.url,
                body: item.body.as_ref(),
                headers: item
                    .body
                    .as_ref()
                    .map(|_| HashMap::from([("Content-Type", "application/json")])),
            }
        })
        .collect();
    serde_json::to_vec(&WireBatch { requests })
        .map_err(|e| GraphError::permanent(0, "SerializationFailed", e.to_string()))
}

/// Parses a `$batch` answer into (index, response) pairs.
pub(crate) fn parse_batch_body(body: &[u8]) -> Result<Vec<(usize, BatchItemResponse)>, GraphError> {
    let parsed: WireResponses = serde_json::from_slice(body).map_err(|e| {
        GraphError::Transient(format!("the $batch answer is {}", decode_failure(&e)))
    })?;
    Ok(parsed
        .responses
        .into_iter()
        .filter_map(|r| {
            let index = r.id.parse::<usize>().ok()?;
            Some((
                index,
                BatchItemResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                },
            ))
        })
        .collect())
}

/// Whether an item's answer should be re-sent, and after how long at least.
fn item_retry(resp: &BatchItemResponse) -> Option<(GraphError, Option<Duration>)> {
    let retry_after = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| parse_retry_after(v));
    let body = resp
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    match classify(resp.status, retry_after, &body) {
        Verdict::Fail(e) if e.is_transient() => Some((e, retry_after)),
        _ => None,
    }
}

/// Turns a final item answer into a result.
fn item_result(resp: BatchItemResponse) -> Result<BatchItemResponse, GraphError> {
    let body = resp
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    match classify(resp.status, None, &body) {
        Verdict::Success => Ok(resp),
        Verdict::Unauthorized(e) | Verdict::Fail(e) => Err(e),
    }
}

impl GraphClient {
    /// Sends `items` in `$batch` calls of at most 20 and returns one result
    /// per item, in order. Items answered 429 or 5xx are re-sent on their own
    /// (honouring their own `Retry-After`, which also pauses the pacer's
    /// bucket) until they succeed, fail for good, or the retry time runs out.
    pub async fn batch(
        &self,
        items: &[BatchItem],
    ) -> Result<Vec<Result<BatchItemResponse, GraphError>>, GraphError> {
        let mut results: Vec<Option<Result<BatchItemResponse, GraphError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let pacer = self.pacer().clone();
        let budget = pacer.retry_budget();
        let mut round = 0u32;
        while !pending.is_empty() {
            round += 1;
            let mut retry: Vec<(usize, GraphError)> = Vec::new();
            let mut wait = Duration::ZERO;
            for chunk in pending.chunks(MAX_BATCH) {
                // Graph evaluates each batch item against the throttling limits.
                for &i in &chunk[1..] {
                    pacer.acquire(items[i].class()).await;
                }
                let class = items[chunk[0]].class();
                let body = build_batch_body(items, chunk)?;
                let mut req = GraphRequest::new(Method::POST, self.batch_url(), class, "/$batch");
                req.body = Some(body.into());
                let answer = self.send(req).await;
                let parsed = match answer.and_then(|r| parse_batch_body(&r.body)) {
                    Ok(p) => p,
                    Err(e) if e.is_transient() => {
                        chunk.iter().for_each(|&i| retry.push((i, e.clone())));
                        wait = wait.max(pacer.backoff(round));
                        continue;
                    }
                    Err(e) => {
                        for &i in chunk {
                            results[i] = Some(Err(e.clone()));
                        }
                        continue;
                    }
                };
                let mut answered = vec![false; chunk.len()];
                for (index, resp) in parsed {
                    let Some(pos) = chunk.iter().position(|&i| i == index) else {
                        continue;
                    };
                    answered[pos] = true;
                    match item_retry(&resp) {
                        Some((error, retry_after)) => {
                            if let GraphError::Throttled { retry_after } = &error {
                                pacer.throttled(items[index].class(), *retry_after);
                            }
                            let d = retry_after.unwrap_or_else(|| pacer.backoff(round));
                            wait = wait.max(d);
                            retry.push((index, error));
                        }
                        None => results[index] = Some(item_result(resp)),
                    }
                }
                for (pos, &i) in chunk.iter().enumerate() {
                    if !answered[pos] {
                        retry.push((
                            i,
                            GraphError::Transient("no answer for this $batch item".into()),
                        ));
                        wait = wait.max(pacer.backoff(round));
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if round >= MAX_ROUNDS || !budget.allows(wait) {
                for (i, e) in retry {
                    results[i] = Some(Err(e));
                }
                break;
            }
            tracing::info!(
                items = retry.len(),
                wait_ms = wait.as_millis() as u64,
                round,
                "re-sending throttled or failed $batch items"
            );
            pacer.count_retry();
            tokio::time::sleep(wait).await;
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GraphError::Transient("not sent".into()))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_uses_index_ids_and_relative_urls() {
        let items = vec![
            BatchItem::get("/users/a?$select=id"),
            BatchItem {
                method: Method::PATCH,
                url: "/users/b".into(),
                body: Some(serde_json::json!({"accountEnabled": false})),
            },
        ];
        let body = build_batch_body(&items, &[0, 1]).expect("builds");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["requests"][0]["id"], "0");
        assert_eq!(v["requests"][0]["method"], "GET");
        assert_eq!(v["requests"][0]["url"], "/users/a?$select=id");
        assert!(v["requests"][0].get("body").is_none());
        assert_eq!(v["requests"][1]["body"]["accountEnabled"], false);
        assert_eq!(
            v["requests"][1]["headers"]["Content-Type"],
            "application/json"
        );
    }

    #[test]
    fn documented_batch_response_parses_with_per_item_status() {
        let parsed =
            parse_batch_body(include_bytes!("fixtures/batch-response.json")).expect("parses");
        assert_eq!(parsed.len(), 4);
        let by_id: HashMap<usize, &BatchItemResponse> =
            parsed.iter().map(|(i, r)| (*i, r)).collect();
        assert_eq!(by_id[&1].status, 200);
        assert_eq!(by_id[&3].status, 403);
        assert!(item_retry(by_id[&1]).is_none());
        assert!(item_retry(by_id[&3]).is_none());
        assert!(matches!(
            item_result(by_id[&3].clone()),
            Err(GraphError::Permanent { status: 403, .. })
        ));
        // The 429 carries its own Retry-After.
        let (e, ra) = item_retry(by_id[&4]).expect("429 is retried");
        assert_eq!(ra, Some(Duration::from_secs(10)));
        assert_eq!(
            e,
            GraphError::Throttled {
                retry_after: Duration::from_secs(10)
            }
        );
        // 204 without a body is a success.
        assert!(item_result(by_id[&2].clone()).is_ok());
    }

    #[test]
    fn garbage_batch_answer_is_transient() {
        assert!(matches!(
            parse_batch_body(b"{\"responses\":[{\"id\""),
            Err(GraphError::Transient(_))
        ));
        assert!(parse_batch_body(b"{}").expect("empty ok").is_empty());
    }
}
