//! `host.json` and `functions/*/function.json` against what the router
//! serves: every folder names a served function with the same trigger, and
//! every served function has a folder.

use std::collections::BTreeMap;
use std::sync::Arc;

use dormant::functions::{AppContext, catalog};
use dormant::host::TriggerKind;
use serde_json::Value;

use crate::harness::{local_config, repo_root};

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn folders() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let dir = repo_root().join("functions");
    for entry in std::fs::read_dir(&dir).expect("functions/ exists") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            out.insert(name, read_json(&entry.path().join("function.json")));
        }
    }
    out
}

fn served() -> BTreeMap<&'static str, TriggerKind> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = local_config(dir.path());
    let ctx = AppContext::build(config).expect("context");
    catalog(Arc::new(ctx)).catalog().clone()
}

#[test]
fn host_json_configures_the_custom_handler_as_the_host_expects() {
    let host = read_json(&repo_root().join("host.json"));
    assert_eq!(host["version"], "2.0");
    let handler = &host["customHandler"];
    assert_eq!(handler["description"]["defaultExecutablePath"], "dormant");
    assert_eq!(
        handler["description"]["arguments"],
        serde_json::json!(["serve"])
    );
    assert_eq!(handler["enableForwardingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    let queues = &host["extensions"]["queues"];
    assert_eq!(
        queues["messageEncoding"], "none",
        "we send JSON text, not base64"
    );
    let dequeues = queues["maxDequeueCount"].as_u64().expect("maxDequeueCount");
    assert!((1..=10).contains(&dequeues));
    let batch = queues["batchSize"].as_u64().expect("batchSize");
    assert!(
        (1..=32).contains(&batch),
        "the queue extension caps batchSize at 32"
    );
    // Valid on every plan: Consumption allows at most 10 minutes.
    let timeout = host["functionTimeout"].as_str().expect("functionTimeout");
    let parts: Vec<u64> = timeout
        .split(':')
        .map(|p| p.parse().expect("hh:mm:ss"))
        .collect();
    assert!(
        parts.len() == 3 && parts[0] * 3600 + parts[1] * 60 + parts[2] <= 600,
        "{timeout}"
    );
}

#[test]
fn every_folder_is_served_with_its_trigger_and_every_function_has_a_folder() {
    let folders = folders();
    let served = served();
    for (name, json) in &folders {
        let kind = served
            .get(name.as_str())
            .unwrap_or_else(|| panic!("functions/{name} is not served by the router"));
        let bindings = json["bindings"].as_array().expect("bindings");
        let triggers: Vec<_> = bindings
            .iter()
            .filter(|b| b["type"].as_str().is_some_and(|t| t.ends_with("Trigger")))
            .collect();
        assert_eq!(triggers.len(), 1, "{name}: exactly one trigger");
        let t = triggers[0];
        match kind {
            TriggerKind::Timer { binding } => {
                assert_eq!(t["type"], "timerTrigger", "{name}");
                assert_eq!(t["name"], *binding, "{name}");
                assert!(
                    !t["runOnStartup"].as_bool().unwrap_or(false),
                    "{name}: never runOnStartup"
                );
            }
            TriggerKind::Queue { binding } => {
                assert_eq!(t["type"], "queueTrigger", "{name}");
                assert_eq!(t["name"], *binding, "{name}");
                assert_eq!(t["connection"], "AzureWebJobsStorage", "{name}");
            }
            TriggerKind::Http { route, methods } => {
                assert_eq!(t["type"], "httpTrigger", "{name}");
                assert_eq!(t["route"], *route, "{name}");
                assert!(!route.contains("{*"), "{name}: no catch-all routes");
                let declared: Vec<String> = t["methods"]
                    .as_array()
                    .expect("methods")
                    .iter()
                    .filter_map(|m| m.as_str().map(str::to_ascii_uppercase))
                    .collect();
                let served: Vec<String> = methods.iter().map(|m| m.as_str().to_owned()).collect();
                assert_eq!(declared, served, "{name}");
                // Forwarding applies only to exactly one httpTrigger in and
                // one http out.
                let outs: Vec<_> = bindings
                    .iter()
                    .filter(|b| b["direction"] == "out")
                    .collect();
                assert!(outs.len() == 1 && outs[0]["type"] == "http", "{name}");
            }
        }
    }
    for name in served.keys() {
        assert!(
            folders.contains_key(*name),
            "{name} is served but has no functions/{name}/function.json"
        );
    }
}
