//! The protocol in-process: real HTTP on loopback against `Functions`
//! registered with test handlers, so every branch of the error model runs.

use std::sync::{Arc, Mutex};

use dormant::host::{
    Application, FailureRecorder, FunctionError, Functions, InvocationResponse, Outcome,
    PermanentFailure,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::harness::fixture;

struct Running {
    base: String,
    recorded: Arc<Mutex<Vec<PermanentFailure>>>,
    _stop: oneshot::Sender<()>,
}

async fn start(recorder_works: bool) -> Running {
    dormant::telemetry::init(dormant::telemetry::LogTarget::Stderr);
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let sink = recorded.clone();
    let recorder: FailureRecorder = Arc::new(move |failure| {
        let sink = sink.clone();
        Box::pin(async move {
            if !recorder_works {
                anyhow::bail!("audit store unavailable");
            }
            sink.lock().expect("sink").push(failure);
            Ok(())
        })
    });
    let functions = Functions::new()
        .timer("Tick", "timer", |inv| async move {
            tracing::info!(past_due = inv.trigger.is_past_due, "tick ran");
            Ok(Outcome {
                return_value: json!({"pastDue": inv.trigger.is_past_due}),
                ..Outcome::default()
            })
        })
        .queue("Work", "message", |inv| async move {
            match inv.trigger.message["kind"].as_str() {
                Some("boom") => Err(FunctionError::Transient(anyhow::anyhow!("graph 503"))),
                Some("bad") => Err(FunctionError::permanent(
                    "unknown-kind",
                    "kind is not supported",
                )),
                _ => {
                    tracing::info!(dequeue = inv.trigger.meta.dequeue_count, "work done");
                    Ok(Outcome {
                        return_value: inv.trigger.message.clone(),
                        ..Outcome::default()
                    })
                }
            }
        })
        .http(
            "Hello",
            "hello/{id}",
            &[axum::http::Method::GET],
            axum::routing::get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("hello {id}")
                },
            ),
        )
        .on_permanent_failure(recorder);
    let app = Application::bind(0).await.expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.serve(functions, async move {
        let _ = stopped.await;
    }));
    Running {
        base,
        recorded,
        _stop: stop,
    }
}

async fn post(base: &str, function: &str, body: String) -> (u16, InvocationResponse) {
    let r = reqwest::Client::new()
        .post(format!("{base}/{function}"))
        .header(
            "X-Azure-Functions-InvocationId",
            "11111111-0000-4000-8000-000000000001",
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let parsed = serde_json::from_str(&text).unwrap_or_default();
    (status, parsed)
}

fn queue_body(message: Value) -> String {
    json!({"Data": {"message": message.to_string()}, "Metadata": {"DequeueCount": "1", "Id": "\"m-1\""}})
        .to_string()
}

#[tokio::test]
async fn success_answers_200_with_outputs_logs_and_return_value() {
    let app = start(true).await;
    let (status, resp) = post(&app.base, "Tick", fixture("host/timer-without-status.json")).await;
    assert_eq!(status, 200);
    assert_eq!(resp.return_value, json!({"pastDue": true}));
    assert!(
        resp.logs.iter().any(|l| l.contains("tick ran")),
        "{:?}",
        resp.logs
    );

    for name in [
        "host/queue-single.json",
        "host/queue-double.json",
        "host/queue-base64.json",
    ] {
        let (status, resp) = post(&app.base, "Work", fixture(name)).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(resp.return_value["v"], json!(1), "{name}");
        assert!(
            resp.logs.iter().any(|l| l.contains("work done")),
            "{name}: {:?}",
            resp.logs
        );
    }
}

#[tokio::test]
async fn the_response_has_exactly_the_three_host_keys() {
    let app = start(true).await;
    let r = reqwest::Client::new()
        .post(format!("{}/Tick", app.base))
        .body(fixture("host/timer-with-status.json"))
        .send()
        .await
        .expect("POST");
    let v: Value = r.json().await.expect("json");
    let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["Logs", "Outputs", "ReturnValue"]);
    assert!(
        v["Outputs"].is_object(),
        "outputs are an object, never a base64-looking string"
    );
}

#[tokio::test]
async fn transient_failure_answers_500_so_the_host_retries() {
    let app = start(true).await;
    let (status, _) = post(&app.base, "Work", queue_body(json!({"kind": "boom"}))).await;
    assert_eq!(status, 500);
    assert!(
        app.recorded.lock().expect("sink").is_empty(),
        "a retry is not a failure record"
    );
}

#[tokio::test]
async fn permanent_failure_is_recorded_then_answers_200() {
    let app = start(true).await;
    let (status, _) = post(&app.base, "Work", queue_body(json!({"kind": "bad"}))).await;
    assert_eq!(status, 200);
    let recorded = app.recorded.lock().expect("sink").clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].code, "unknown-kind");
    assert_eq!(recorded[0].function, "Work");
    assert_eq!(recorded[0].message_id.as_deref(), Some("m-1"));
    assert_eq!(
        recorded[0].invocation_id,
        "11111111-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn a_malformed_message_is_recorded_not_retried_forever() {
    let app = start(true).await;
    let (status, _) = post(&app.base, "Work", fixture("host/queue-malformed.json")).await;
    assert_eq!(status, 200);
    let recorded = app.recorded.lock().expect("sink").clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].code, "malformed-envelope");
    assert_eq!(recorded[0].dequeue_count, Some(4));
    assert!(
        !recorded[0].message.contains("this is not json"),
        "the body is not echoed"
    );
}

#[tokio::test]
async fn a_failure_that_cannot_be_recorded_is_retried() {
    let app = start(false).await;
    let (status, _) = post(&app.base, "Work", queue_body(json!({"kind": "bad"}))).await;
    assert_eq!(status, 500, "losing the record is worse than a retry");
}

#[tokio::test]
async fn forwarded_http_keeps_its_api_path_and_unknown_paths_are_404() {
    let app = start(true).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/api/hello/42", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello 42");
    let r = client
        .get(format!("{}/api/nothing/here", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "no catch-all route");
    let (status, _) = post(&app.base, "Nope", queue_body(json!({}))).await;
    assert_eq!(status, 404);
    let r = client
        .post(format!("{}/Work", app.base))
        .body("not an envelope")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
}

#[test]
fn the_catalog_lists_every_registered_function() {
    let f = Functions::new()
        .timer("A", "timer", |_| async { Ok(Outcome::default()) })
        .queue("B", "message", |_| async { Ok(Outcome::default()) });
    let names: Vec<_> = f.catalog().keys().copied().collect();
    assert_eq!(names, ["A", "B"]);
}
