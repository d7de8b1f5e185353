//! Real host payload shapes: parse → serialize → re-parse, and typed
//! decoding of each.

use dormant::host::{InvocationRequest, QueueTrigger, TimerInfo};
use serde_json::json;

use crate::harness::fixture;

const ALL: &[&str] = &[
    "host/timer-with-status.json",
    "host/timer-without-status.json",
    "host/timer-first-run.json",
    "host/queue-single.json",
    "host/queue-double.json",
    "host/queue-base64.json",
    "host/queue-malformed.json",
];

#[test]
fn every_fixture_round_trips() {
    for name in ALL {
        let parsed: InvocationRequest =
            serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = serde_json::to_string(&parsed).expect("serialize");
        let again: InvocationRequest = serde_json::from_str(&text).expect("re-parse");
        assert_eq!(parsed, again, "{name}");
    }
}

#[test]
fn timer_payloads_decode_and_round_trip() {
    for (name, past_due, has_status) in [
        ("host/timer-with-status.json", false, true),
        ("host/timer-without-status.json", true, false),
        ("host/timer-first-run.json", false, true),
    ] {
        let req: InvocationRequest = serde_json::from_str(&fixture(name)).expect(name);
        let timer =
            TimerInfo::from_request(&req, "timer").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(timer.is_past_due, past_due, "{name}");
        assert_eq!(timer.schedule_status.is_some(), has_status, "{name}");
        assert!(timer.schedule.as_ref().is_some_and(|s| s.adjust_for_dst));
        let back = serde_json::to_value(&timer).expect("serialize");
        let again: TimerInfo = serde_json::from_value(back).expect("re-parse");
        assert_eq!(timer, again, "{name}");
    }
}

#[test]
fn queue_payloads_decode_to_the_same_message_in_every_encoding() {
    let mut kinds = Vec::new();
    for name in [
        "host/queue-single.json",
        "host/queue-double.json",
        "host/queue-base64.json",
    ] {
        let req: InvocationRequest = serde_json::from_str(&fixture(name)).expect(name);
        let q =
            QueueTrigger::from_request(&req, "message").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(q.message["v"], json!(1), "{name}");
        assert_eq!(
            q.message["tenant"],
            json!("8f0c2d2e-1111-4c4c-9d9d-123456789abc")
        );
        assert!(
            q.meta.id.as_deref().is_some_and(|id| !id.contains('"')),
            "{name}: id unquoted"
        );
        assert!(q.meta.insertion_time.is_some(), "{name}");
        kinds.push(q.message["kind"].as_str().map(str::to_owned));

        // Typed → host shape → typed again is lossless.
        let again =
            QueueTrigger::from_request(&q.to_request("message"), "message").expect("re-parse");
        assert_eq!(q, again, "{name}");
    }
    assert_eq!(
        kinds,
        vec![
            Some("notify".to_owned()),
            Some("disable".to_owned()),
            Some("remove-licenses".to_owned())
        ]
    );
}

#[test]
fn a_malformed_queue_message_is_an_error_with_its_metadata_intact() {
    let req: InvocationRequest =
        serde_json::from_str(&fixture("host/queue-malformed.json")).expect("fixture");
    let err = QueueTrigger::from_request(&req, "message").expect_err("garbage");
    assert!(err.to_string().contains("queue message"));
    let meta = dormant::host::QueueMetadata::from_map(&req.metadata);
    assert_eq!(meta.dequeue_count, 4);
    assert_eq!(
        meta.id.as_deref(),
        Some("11111111-2222-4333-8444-555555555555")
    );
}
