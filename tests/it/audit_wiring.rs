//! A permanent failure lands in the real audit log (local store) before the
//! host hears 200.

use std::sync::Arc;

use dormant::functions::AppContext;
use dormant::host::{Application, Functions, Outcome};
use dormant::store::audit;

use crate::harness::{fixture, local_config};

#[tokio::test]
async fn a_malformed_message_is_recorded_in_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = local_config(dir.path());
    let ctx = Arc::new(AppContext::build(config).expect("context"));
    ctx.store.ensure_defaults().await.expect("containers");
    let functions = Functions::new()
        .queue("Work", "message", |_| async { Ok(Outcome::default()) })
        .on_permanent_failure(ctx.failure_recorder());
    let app = Application::bind(0).await.expect("bind");
    let url = format!("http://127.0.0.1:{}/Work", app.port());
    tokio::spawn(app.serve(functions, std::future::pending()));

    let r = reqwest::Client::new()
        .post(url)
        .body(fixture("host/queue-malformed.json"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);

    let today = chrono::Utc::now().date_naive();
    let records = ctx.audit.read_day(today).await.expect("audit readable");
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.step, "malformed-envelope");
    assert_eq!(record.outcome, audit::Outcome::Failed);
    assert!(
        record
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("11111111-2222-4333-8444-555555555555"))
    );
    let line = serde_json::to_string(record).expect("json");
    assert!(
        !line.contains("this is not json"),
        "the message body is never echoed"
    );
}
