//! Simulated Graph behaviour against the real HTTPS server.

use std::time::Duration;

use dormant::sim::{SimConfig, TenantKind, ThrottleConfig, USAGE_REPORT_COLUMNS};
use reqwest::Method;
use serde_json::{Value, json};

use crate::sim_harness::{Harness, assert_graph_error};

/// Users not synced from on-premises AD (Graph refuses to change synced ones).
/// Also not privileged (app-only calls cannot disable or delete role holders).
fn cloud_only(t: &Value) -> bool {
    !t["kinds"].to_string().contains("on-premises-synced") && t["role"].is_null()
}

fn live_users(truth: &[Value]) -> usize {
    truth.len()
}

#[tokio::test]
async fn sign_in_activity_pages_cap_at_120_and_cover_every_user_once() {
    let h = Harness::workforce(1000).await;
    let tok = h.token().await;
    let (all, sizes) = h
        .page_all(
            &tok,
            "/v1.0/users?$select=id,userPrincipalName,signInActivity&$top=999",
        )
        .await;
    assert!(sizes.iter().all(|s| *s <= 120), "{sizes:?}");
    assert_eq!(sizes[0], 120);
    let truth = h.truth();
    assert_eq!(all.len(), live_users(&truth));
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|u| u["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), all.len());
    // Never-signed-in users have no signInActivity at all; attacked users show a
    // recent lastSignInDateTime with an old or missing lastSuccessfulSignInDateTime.
    let by_id: std::collections::HashMap<&str, &Value> = truth
        .iter()
        .map(|t| (t["id"].as_str().expect("id"), t))
        .collect();
    let mut checked_never = 0;
    let mut checked_attacked = 0;
    for u in &all {
        let t = by_id[u["id"].as_str().expect("id")];
        let kinds = t["kinds"].to_string();
        if kinds.contains("never-signed-in") {
            assert!(u.get("signInActivity").is_none(), "{u}");
            checked_never += 1;
        }
        if kinds.contains("failed-signins-only") {
            let sia = &u["signInActivity"];
            assert!(sia["lastSignInDateTime"].is_string(), "{u}");
            assert_ne!(
                sia["lastSignInDateTime"],
                sia["lastSuccessfulSignInDateTime"]
            );
            checked_attacked += 1;
        }
        if let Some(s) = u["signInActivity"]["lastSuccessfulSignInDateTime"].as_str() {
            assert!(s >= "2023-12-01", "not back-filled: {s}");
        }
    }
    assert!(checked_never > 0 && checked_attacked > 0);

    // Without signInActivity, $top is honoured; default is 100; over 999 is refused.
    let (_, sizes) = h.page_all(&tok, "/v1.0/users?$select=id&$top=999").await;
    assert_eq!(sizes[0], 999);
    let (s, _, body) = h.get(&tok, "/v1.0/users").await;
    assert_eq!(s, 200);
    assert_eq!(body["value"].as_array().expect("value").len(), 100);
    assert!(
        body["@odata.context"]
            .as_str()
            .expect("context")
            .ends_with("$metadata#users")
    );
    let next = body["@odata.nextLink"].as_str().expect("nextLink");
    assert!(next.starts_with(&format!("{}/v1.0/users?", h.base)) && next.contains("$skiptoken="));
    let (s, _, body) = h.get(&tok, "/v1.0/users?$top=1000").await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Request_BadRequest");
    let (s, _, body) = h.get(&tok, "/v1.0/users?$select=id,favouriteColour").await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Request_BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn skiptokens_expire_on_the_sim_clock() {
    let h = Harness::workforce(300).await;
    let tok = h.token().await;
    let (_, _, body) = h.get(&tok, "/v1.0/users?$select=id").await;
    let next = body["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    assert_eq!(h.get(&tok, &next).await.0, 200);
    h.sim.advance(Duration::from_secs(301));
    let (s, _, body) = h.get(&tok, &next).await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Directory_ExpiredPageToken");
    let tampered = next.replace("$skiptoken=", "$skiptoken=x");
    assert_eq!(h.get(&tok, &tampered).await.0, 400);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn filters_match_the_truth_and_unsupported_ones_get_graphs_error() {
    let h = Harness::workforce(1000).await;
    let tok = h.token().await;
    let truth = h.truth();

    let (got, _) = h.page_all(&tok, "/v1.0/users?$filter=startswith(userPrincipalName,'A')&$select=id,userPrincipalName&$top=999").await;
    let want = truth
        .iter()
        .filter(|t| {
            t["upn"]
                .as_str()
                .expect("upn")
                .to_lowercase()
                .starts_with('a')
        })
        .count();
    assert!(want > 0);
    assert_eq!(got.len(), want, "startswith is case-insensitive");

    let (got, _) = h.page_all(&tok, "/v1.0/users?$filter=accountEnabled eq false and userType eq 'Member'&$select=id&$top=999").await;
    let want = truth
        .iter()
        .filter(|t| t["accountEnabled"] == false && t["userType"] == "Member")
        .count();
    assert_eq!(got.len(), want);

    let (got, _) = h.page_all(&tok, "/v1.0/users?$filter=userType eq 'Guest'&$select=id,externalUserState,identities,creationType").await;
    assert_eq!(
        got.len(),
        truth.iter().filter(|t| t["userType"] == "Guest").count()
    );
    assert!(got.iter().all(|g| g["creationType"] == "Invitation"));

    let cutoff = (h.sim.now() - chrono::TimeDelta::days(90))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (got, sizes) = h.page_all(&tok, &format!("/v1.0/users?$filter=signInActivity/lastSuccessfulSignInDateTime le {cutoff}&$select=id,signInActivity&$top=999")).await;
    assert!(sizes.iter().all(|s| *s <= 120));
    let want = truth
        .iter()
        .filter(|t| {
            t["lastSuccessfulSignIn"]
                .as_str()
                .is_some_and(|d| d >= "2023-12-01" && d <= cutoff.as_str())
        })
        .count();
    assert_eq!(got.len(), want);

    let (got, _) = h
        .page_all(
            &tok,
            &format!("/v1.0/users?$filter=createdDateTime ge {cutoff}&$select=id"),
        )
        .await;
    assert_eq!(
        got.len(),
        truth
            .iter()
            .filter(|t| t["created"].as_str().expect("created") >= cutoff.as_str())
            .count()
    );

    for (q, code) in [
        (
            "$filter=signInActivity/lastSignInDateTime le 2025-01-01T00:00:00Z and accountEnabled eq true",
            "Request_UnsupportedQuery",
        ),
        ("$filter=accountEnabled ne true", "Request_UnsupportedQuery"),
        (
            "$filter=endswith(mail,'@contoso.com')",
            "Request_UnsupportedQuery",
        ),
        ("$filter=jobTitle ge 'A'", "Request_UnsupportedQuery"),
        ("$filter=shoeSize eq 4", "Request_BadRequest"),
        ("$filter=accountEnabled eq", "BadRequest"),
        ("$search=\"displayName:adele\"", "Request_UnsupportedQuery"),
        ("$orderby=displayName", "Request_UnsupportedQuery"),
    ] {
        let (s, _, body) = h.get(&tok, &format!("/v1.0/users?{q}")).await;
        assert_eq!(s, 400, "{q}");
        assert_graph_error(&body, code);
    }

    // Advanced queries work with ConsistencyLevel: eventual and $count=true.
    let r = h
        .http
        .get(format!(
            "{}/v1.0/users?$filter=accountEnabled ne true&$count=true&$select=id&$top=999",
            h.base
        ))
        .bearer_auth(&tok)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["@odata.count"],
        truth
            .iter()
            .filter(|t| t["accountEnabled"] == false)
            .count()
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn b2c_refuses_advanced_queries_and_serves_identities() {
    let h = Harness::start(SimConfig {
        users: 300,
        kind: TenantKind::B2c,
        ..SimConfig::default()
    })
    .await;
    let tok = h.token().await;
    for q in [
        "$filter=accountEnabled ne false",
        "$filter=not(accountEnabled eq false)",
        "$filter=endswith(displayName,'x')",
        "$count=true",
        "$search=\"displayName:a\"",
    ] {
        let r = h
            .http
            .get(format!("{}/v1.0/users?{q}", h.base))
            .bearer_auth(&tok)
            .header("ConsistencyLevel", "eventual")
            .send()
            .await
            .expect("req");
        assert_eq!(r.status().as_u16(), 400, "{q}");
        let body: Value = r.json().await.expect("json");
        assert_graph_error(&body, "Request_UnsupportedQuery");
    }
    let (s, _, body) = h.get(&tok, "/v1.0/users?$filter=creationType eq 'LocalAccount'&$select=id,userPrincipalName,identities,creationType&$top=50").await;
    assert_eq!(s, 200);
    let users = body["value"].as_array().expect("value");
    assert!(!users.is_empty());
    for u in users {
        let upn = u["userPrincipalName"].as_str().expect("upn");
        let local = upn.split('@').next().expect("local");
        assert!(uuid::Uuid::parse_str(local).is_ok(), "{upn}");
        let types: Vec<&str> = u["identities"]
            .as_array()
            .expect("identities")
            .iter()
            .filter_map(|i| i["signInType"].as_str())
            .collect();
        assert!(
            types.contains(&"emailAddress") || types.contains(&"userName"),
            "{u}"
        );
    }
    let (s, _, _) = h
        .get(&tok, "/v1.0/users?$filter=startswith(displayName,'a')")
        .await;
    assert_eq!(s, 200);
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/organization/{}?$select=directorySizeQuota",
                h.sim.tenant_id()
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["directorySizeQuota"]["used"].as_u64(), Some(305));
    assert!(body["directorySizeQuota"]["total"].as_u64().expect("total") > 300);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn batch_limits_and_per_item_answers() {
    let h = Harness::workforce(100).await;
    let tok = h.token().await;
    let truth = h.truth();
    let reqs: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    let (s, _, body) = h
        .send(
            &tok,
            Method::POST,
            "/v1.0/$batch",
            Some(json!({"requests": reqs})),
        )
        .await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "BadRequest");

    let id = truth.iter().find(|t| cloud_only(t)).expect("cloud user")["id"]
        .as_str()
        .expect("id");
    let mut reqs: Vec<Value> = (0..18).map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{id}/manager")})).collect();
    reqs.push(json!({"id": "missing", "method": "GET", "url": "/users/00000000-0000-4000-8000-000000000000"}));
    reqs.push(json!({"id": "patch", "method": "PATCH", "url": format!("/users/{id}"), "body": {"jobTitle": "Engineer"}, "headers": {"Content-Type": "application/json"}}));
    let (s, _, body) = h
        .send(
            &tok,
            Method::POST,
            "/v1.0/$batch",
            Some(json!({"requests": reqs})),
        )
        .await;
    assert_eq!(s, 200);
    let responses = body["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 20);
    let missing = responses
        .iter()
        .find(|r| r["id"] == "missing")
        .expect("missing");
    assert_eq!(missing["status"], 404);
    assert_graph_error(&missing["body"], "Request_ResourceNotFound");
    assert_eq!(
        responses
            .iter()
            .find(|r| r["id"] == "patch")
            .expect("patch")["status"],
        204
    );

    // A throttled item gets its own 429 and Retry-After; the others still succeed.
    h.sim.set_throttle(ThrottleConfig {
        resource_units_per_10s: Some(3),
        ..ThrottleConfig::default()
    });
    let reqs: Vec<Value> = (0..5)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{id}")}))
        .collect();
    let (s, _, body) = h
        .send(
            &tok,
            Method::POST,
            "/v1.0/$batch",
            Some(json!({"requests": reqs})),
        )
        .await;
    assert_eq!(s, 200);
    let statuses: Vec<u64> = body["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    let throttled = &body["responses"][3];
    assert!(
        throttled["headers"]["Retry-After"]
            .as_str()
            .expect("Retry-After")
            .parse::<u64>()
            .is_ok()
    );
    assert_graph_error(&throttled["body"], "TooManyRequests");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn usage_report_redirects_to_a_bom_csv_and_conceals_names_until_told() {
    let h = Harness::workforce(200).await;
    let tok = h.token().await;
    let fetch = |send_auth: bool| {
        let h = &h;
        let tok = tok.clone();
        async move {
            let r = h
                .http
                .get(format!(
                    "{}/v1.0/reports/getOffice365ActiveUserDetail(period='D180')",
                    h.base
                ))
                .bearer_auth(&tok)
                .send()
                .await
                .expect("report");
            assert_eq!(r.status().as_u16(), 302);
            let loc = r.headers()["location"].to_str().expect("ascii").to_string();
            let mut rb = h.http.get(&loc);
            if send_auth {
                rb = rb.bearer_auth(&tok);
            }
            let d = rb.send().await.expect("download");
            assert_eq!(d.status().as_u16(), 200);
            (loc, d.bytes().await.expect("csv").to_vec())
        }
    };
    let (loc, csv) = fetch(false).await;
    assert!(csv.starts_with(&[0xEF, 0xBB, 0xBF]), "UTF-8 BOM");
    let text = String::from_utf8(csv[3..].to_vec()).expect("utf8");
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(|l| l.trim_end()),
        Some(USAGE_REPORT_COLUMNS)
    );
    let first = lines.next().expect("a row");
    let upn = first.split(',').nth(1).expect("upn column");
    assert!(
        upn.len() == 32 && upn.chars().all(|c| c.is_ascii_hexdigit()),
        "concealed: {upn}"
    );
    assert_eq!(h.sim.stats().report_downloads_with_auth, 0);

    let (s, _, body) = h.get(&tok, "/v1.0/admin/reportSettings").await;
    assert_eq!(
        (s, body["displayConcealedNames"].as_bool()),
        (200, Some(true))
    );
    let (s, _, _) = h
        .send(
            &tok,
            Method::PATCH,
            "/v1.0/admin/reportSettings",
            Some(json!({"displayConcealedNames": false})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, csv) = fetch(true).await;
    let text = String::from_utf8(csv[3..].to_vec()).expect("utf8");
    let upn = text
        .lines()
        .nth(1)
        .expect("row")
        .split(',')
        .nth(1)
        .expect("upn");
    assert!(upn.contains('@'), "{upn}");
    assert_eq!(
        h.sim.stats().report_downloads_with_auth,
        1,
        "the client sent Authorization to the storage URL"
    );

    // Links are short-lived.
    h.sim.advance(Duration::from_secs(301));
    assert_eq!(
        h.http
            .get(&loc)
            .send()
            .await
            .expect("download")
            .status()
            .as_u16(),
        403
    );
    let (s, _, body) = h
        .get(
            &tok,
            "/v1.0/reports/getOffice365ActiveUserDetail(period='D365')",
        )
        .await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn report_calls_are_limited_to_14_per_10_minutes() {
    let h = Harness::workforce(20).await;
    let tok = h.token().await;
    for _ in 0..14 {
        assert_eq!(
            h.get(
                &tok,
                "/v1.0/reports/getOffice365ActiveUserDetail(period='D7')"
            )
            .await
            .0,
            302
        );
    }
    let (s, headers, body) = h
        .get(
            &tok,
            "/v1.0/reports/getOffice365ActiveUserDetail(period='D7')",
        )
        .await;
    assert_eq!(s, 429);
    assert_graph_error(&body, "TooManyRequests");
    assert!(
        headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("secs")
            > 0
    );
    h.sim.advance(Duration::from_secs(600));
    assert_eq!(
        h.get(
            &tok,
            "/v1.0/reports/getOffice365ActiveUserDetail(period='D7')"
        )
        .await
        .0,
        302
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn soft_delete_restore_and_purge_after_30_days() {
    let h = Harness::workforce(100).await;
    let tok = h.token().await;
    let truth = h.truth();
    let victim = truth
        .iter()
        .find(|t| cloud_only(t) && !t["licenses"].as_array().expect("licenses").is_empty())
        .expect("a licensed user");
    let id = victim["id"].as_str().expect("id");
    assert_eq!(
        h.send(&tok, Method::DELETE, &format!("/v1.0/users/{id}"), None)
            .await
            .0,
        204
    );
    let (s, _, body) = h.get(&tok, &format!("/v1.0/users/{id}")).await;
    assert_eq!(s, 404);
    assert_graph_error(&body, "Request_ResourceNotFound");
    let (deleted, _) = h
        .page_all(&tok, "/v1.0/directory/deletedItems/microsoft.graph.user")
        .await;
    let d = deleted
        .iter()
        .find(|u| u["id"] == id)
        .expect("in deleted items");
    assert!(d["deletedDateTime"].is_string());
    assert!(
        d["userPrincipalName"]
            .as_str()
            .expect("upn")
            .starts_with(&id.replace('-', ""))
    );

    let (s, _, body) = h
        .send(
            &tok,
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{id}/restore"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = h
        .get(
            &tok,
            &format!("/v1.0/users/{id}?$select=id,assignedLicenses"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body["assignedLicenses"].as_array().expect("licenses").len(),
        victim["licenses"].as_array().expect("licenses").len()
    );

    assert_eq!(
        h.send(&tok, Method::DELETE, &format!("/v1.0/users/{id}"), None)
            .await
            .0,
        204
    );
    h.sim.advance(Duration::from_secs(29 * 86_400));
    let tok = h.token().await;
    assert_eq!(
        h.get(&tok, &format!("/v1.0/directory/deletedItems/{id}"))
            .await
            .0,
        200
    );
    h.sim.advance(Duration::from_secs(2 * 86_400));
    let tok = h.token().await;
    assert_eq!(
        h.get(&tok, &format!("/v1.0/directory/deletedItems/{id}"))
            .await
            .0,
        404
    );

    // Permanent delete.
    let other = truth
        .iter()
        .filter(|t| cloud_only(t))
        .nth(5)
        .expect("cloud user")["id"]
        .as_str()
        .expect("id");
    assert_eq!(
        h.send(&tok, Method::DELETE, &format!("/v1.0/users/{other}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        h.send(
            &tok,
            Method::DELETE,
            &format!("/v1.0/directory/deletedItems/{other}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        h.send(
            &tok,
            Method::POST,
            &format!("/v1.0/directory/deletedItems/{other}/restore"),
            None
        )
        .await
        .0,
        404
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn licenses_mailboxes_managers_and_the_safe_order() {
    let h = Harness::workforce(400).await;
    let tok = h.token().await;
    let truth = h.truth();

    let grouped = truth
        .iter()
        .find(|t| t["groupLicensed"] == true)
        .expect("a group-licensed user");
    let gid = grouped["id"].as_str().expect("id");
    let e3 = "6fd2c87f-b296-42f0-b197-1e91e994b900";
    let (s, _, body) = h
        .send(
            &tok,
            Method::POST,
            &format!("/v1.0/users/{gid}/assignLicense"),
            Some(json!({"addLicenses": [], "removeLicenses": [e3]})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("inherited from a group")
    );
    let (s, _, body) = h
        .get(
            &tok,
            &format!("/v1.0/users/{gid}?$select=licenseAssignmentStates"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        body["licenseAssignmentStates"]
            .as_array()
            .expect("states")
            .iter()
            .any(|l| l["assignedByGroup"].is_string())
    );

    let (s, _, body) = h.get(&tok, "/v1.0/subscribedSkus").await;
    assert_eq!(s, 200);
    assert!(
        body["value"]
            .as_array()
            .expect("skus")
            .iter()
            .any(|s| s["skuPartNumber"] == "ENTERPRISEPACK")
    );

    let no_manager = truth
        .iter()
        .find(|t| t["managerId"].is_null())
        .expect("someone without a manager");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/manager",
                no_manager["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&body, "Request_ResourceNotFound");
    let managed = truth
        .iter()
        .find(|t| t["managerId"].is_string())
        .expect("someone with a manager");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/manager",
                managed["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["id"], managed["managerId"]);

    let shared = truth
        .iter()
        .find(|t| t["mailbox"] == "shared")
        .expect("a shared mailbox");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/mailboxSettings",
                shared["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!((s, body["userPurpose"].as_str()), (200, Some("shared")));

    // Convert to shared, then remove licenses: works. The other order loses the mailbox.
    let direct: Vec<&Value> = truth
        .iter()
        .filter(|t| {
            t["groupLicensed"] == false
                && t["licenses"].to_string().contains("ENTERPRISEPACK")
                && t["mailbox"] == "user"
        })
        .take(2)
        .collect();
    let ex = h.token_for("https://outlook.office365.com/.default").await;
    let tid = h.sim.tenant_id();
    let convert = |upn: String| {
        let h = &h;
        let ex = ex.clone();
        let tid = tid.clone();
        async move {
            h.send(&ex, Method::POST, &format!("/adminapi/beta/{tid}/InvokeCommand"), Some(json!({"CmdletInput": {"CmdletName": "Set-Mailbox", "Parameters": {"Identity": upn, "Type": "Shared"}}}))).await
        }
    };
    let good = direct[0];
    assert_eq!(
        convert(good["upn"].as_str().expect("upn").to_string())
            .await
            .0,
        200
    );
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/mailboxSettings",
                good["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!((s, body["userPurpose"].as_str()), (200, Some("shared")));
    let bad = direct[1];
    let bid = bad["id"].as_str().expect("id");
    let (s, _, _) = h
        .send(
            &tok,
            Method::POST,
            &format!("/v1.0/users/{bid}/assignLicense"),
            Some(json!({"addLicenses": [], "removeLicenses": [e3]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        convert(bad["upn"].as_str().expect("upn").to_string())
            .await
            .0,
        404
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn mail_invitations_realms_audits_roles_and_quota() {
    let h = Harness::workforce(500).await;
    let tok = h.token().await;
    let truth = h.truth();
    let from = h
        .sim
        .settings()
        .into_iter()
        .find(|(k, _)| k == "DORMANT_POLICY__NOTIFY__MAIL_FROM")
        .expect("mail from")
        .1;
    let (s, _, _) = h.send(&tok, Method::POST, &format!("/v1.0/users/{from}/sendMail"), Some(json!({
        "message": {"subject": "Your account is inactive", "body": {"contentType": "HTML", "content": "<p>Hi</p>"}, "toRecipients": [{"emailAddress": {"address": "adele@contoso.com"}}]},
        "saveToSentItems": false
    }))).await;
    assert_eq!(s, 202);
    let mail = h.sim.mail();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, vec!["adele@contoso.com".to_string()]);

    let viral = truth
        .iter()
        .find(|t| t["kinds"].to_string().contains("guest-viral"))
        .expect("viral guest");
    let upn = viral["upn"].as_str().expect("upn");
    let mail_addr = upn.split("#EXT#").next().expect("ext").replace('_', "@");
    let (_, _, u) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}?$select=identities,userType",
                viral["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(u["identities"][0]["issuer"], "ExternalAzureAD", "{u}");
    let r = h
        .http
        .get(format!(
            "{}/common/userrealm?user={mail_addr}&api-version=2.1",
            h.base
        ))
        .send()
        .await
        .expect("realm");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["IsViral"], true, "{body}");

    let (s, _, body) = h.send(&tok, Method::POST, "/v1.0/invitations", Some(json!({
        "invitedUserEmailAddress": mail_addr, "inviteRedirectUrl": "https://myapps.microsoft.com", "sendInvitationMessage": false,
        "resetRedemption": true, "invitedUser": {"id": viral["id"]}
    }))).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["invitedUser"]["id"], viral["id"]);
    let (_, _, u) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}?$select=externalUserState",
                viral["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(u["externalUserState"], "PendingAcceptance");

    let target = truth
        .iter()
        .find(|t| {
            t["accountEnabled"] == false && t["userType"] == "Member" && t["mailbox"] == "user"
        })
        .expect("disabled member");
    let tid = target["id"].as_str().expect("id");
    assert!(h.sim.reenable_by_person(tid));
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/auditLogs/directoryAudits?$filter=targetResources/any(t:t/id eq '{tid}')"
            ),
        )
        .await;
    assert_eq!(s, 200);
    let events = body["value"].as_array().expect("events");
    let enable = events
        .iter()
        .find(|e| e["activityDisplayName"] == "Enable account")
        .expect("Enable account event");
    assert!(enable["initiatedBy"]["user"]["userPrincipalName"].is_string());
    let (s, _, _) = h
        .get(
            &tok,
            "/v1.0/auditLogs/directoryAudits?$filter=category eq 'x'",
        )
        .await;
    assert_eq!(s, 400);

    let admin = truth
        .iter()
        .find(|t| t["role"] == "Global Administrator")
        .expect("global admin");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/roleManagement/directory/roleAssignments?$filter=principalId eq '{}'",
                admin["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body["value"][0]["roleDefinitionId"],
        "62e90394-69f5-4237-9190-012177145e10"
    );
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/transitiveMemberOf/microsoft.graph.directoryRole",
                admin["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["value"][0]["displayName"], "Global Administrator");

    let (s, _, body) = h.get(&tok, "/v1.0/groups").await;
    assert_eq!(s, 200);
    let excl = body["value"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["displayName"] == "Dormant Exclusions")
        .expect("exclusions")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (members, _) = h
        .page_all(
            &tok,
            &format!("/v1.0/groups/{excl}/transitiveMembers?$select=id"),
        )
        .await;
    assert!(
        members
            .iter()
            .any(|m| m["@odata.type"] == "#microsoft.graph.group")
    );
    let users_in = members
        .iter()
        .filter(|m| m["@odata.type"] == "#microsoft.graph.user")
        .count();
    assert_eq!(
        users_in,
        truth
            .iter()
            .filter(|t| t["kinds"].to_string().contains("in-exclusion-group")
                || t["kinds"].to_string().contains("service-account"))
            .count()
    );

    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/organization/{}?$select=directorySizeQuota",
                h.sim.tenant_id()
            ),
        )
        .await;
    assert_eq!(s, 200);
    assert!(body["directorySizeQuota"]["used"].as_u64().expect("used") >= 500);
    let (s, _, body) = h.get(&tok, "/v1.0/me").await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_sign_in_recorded_now_shows_up_and_failures_do_not_count_as_success() {
    let h = Harness::workforce(100).await;
    let tok = h.token().await;
    let truth = h.truth();
    let never = truth
        .iter()
        .find(|t| t["kinds"].to_string().contains("never-signed-in"))
        .expect("never");
    let id = never["id"].as_str().expect("id");
    assert!(h.sim.record_sign_in(id, true, false));
    let (_, _, u) = h
        .get(&tok, &format!("/v1.0/users/{id}?$select=signInActivity"))
        .await;
    assert!(u["signInActivity"]["lastSignInDateTime"].is_string());
    assert!(u["signInActivity"]["lastSuccessfulSignInDateTime"].is_null());
    assert!(h.sim.record_sign_in(id, false, true));
    let (_, _, u) = h
        .get(&tok, &format!("/beta/users/{id}?$select=signInActivity"))
        .await;
    assert!(u["signInActivity"]["lastSuccessfulSignInDateTime"].is_string());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn expand_manager_with_a_nested_select() {
    let h = Harness::workforce(200).await;
    let tok = h.token().await;
    let truth = h.truth();
    let (users, _) = h
        .page_all(
            &tok,
            "/v1.0/users?$select=id&$expand=manager($select=id,displayName,mail)&$top=999",
        )
        .await;
    for u in &users {
        let t = truth.iter().find(|t| t["id"] == u["id"]).expect("in truth");
        assert_eq!(u["manager"]["id"], t["managerId"], "{u}");
    }
    let (s, _, body) = h.get(&tok, "/v1.0/users?$expand=memberOf").await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Request_BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn synced_and_privileged_users_cannot_be_disabled_or_deleted_by_the_app() {
    let h = Harness::workforce(300).await;
    let tok = h.token().await;
    let truth = h.truth();
    let synced = truth
        .iter()
        .find(|t| t["kinds"].to_string().contains("on-premises-synced") && t["role"].is_null())
        .expect("a synced user");
    let id = synced["id"].as_str().expect("id");
    let (s, _, body) = h
        .send(
            &tok,
            Method::PATCH,
            &format!("/v1.0/users/{id}"),
            Some(json!({"accountEnabled": false})),
        )
        .await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Request_BadRequest");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("on-premises mastered")
    );
    assert_eq!(
        h.send(&tok, Method::DELETE, &format!("/v1.0/users/{id}"), None)
            .await
            .0,
        400
    );
    assert_eq!(
        h.send(
            &tok,
            Method::PATCH,
            &format!("/v1.0/users/{id}"),
            Some(json!({"usageLocation": "NL"}))
        )
        .await
        .0,
        204
    );
    let (_, _, u) = h
        .get(
            &tok,
            &format!("/v1.0/users/{id}?$select=onPremisesSyncEnabled,accountEnabled"),
        )
        .await;
    assert_eq!(u["onPremisesSyncEnabled"], true);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn write_and_invitation_budgets() {
    let h = Harness::workforce(100).await;
    let tok = h.token().await;
    let truth = h.truth();
    h.sim.set_throttle(ThrottleConfig {
        writes_per_150s: 2,
        invitations_per_5s: 1,
        ..ThrottleConfig::default()
    });
    let id = truth
        .iter()
        .find(|t| cloud_only(t) && t["userType"] == "Member")
        .expect("member")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            h.send(
                &tok,
                Method::PATCH,
                &format!("/v1.0/users/{id}"),
                Some(json!({"jobTitle": "Analyst"})),
            )
            .await
            .0,
        );
    }
    assert_eq!(codes, vec![204, 204, 429]);
    // Reads are not writes.
    assert_eq!(h.get(&tok, &format!("/v1.0/users/{id}")).await.0, 200);
    h.sim.advance(Duration::from_secs(150));
    h.sim.set_throttle(ThrottleConfig {
        invitations_per_5s: 1,
        ..ThrottleConfig::default()
    });
    let invite = json!({"invitedUserEmailAddress": "new.person@fabrikam.com", "inviteRedirectUrl": "https://myapps.microsoft.com"});
    assert_eq!(
        h.send(
            &tok,
            Method::POST,
            "/v1.0/invitations",
            Some(invite.clone())
        )
        .await
        .0,
        201
    );
    let (s, headers, _) = h
        .send(&tok, Method::POST, "/v1.0/invitations", Some(invite))
        .await;
    assert_eq!(s, 429);
    assert!(headers.get("retry-after").is_some());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn b2c_users_carry_extension_attributes_and_no_licenses() {
    let h = Harness::start(SimConfig {
        users: 50,
        kind: TenantKind::B2c,
        ..SimConfig::default()
    })
    .await;
    let tok = h.token().await;
    let ext = h
        .sim
        .with_tenant(|t| format!("extension_{}_loyaltyTier", t.ext_app));
    let (s, _, body) = h
        .get(
            &tok,
            &format!("/v1.0/users?$select=id,{ext},assignedLicenses,creationType&$top=50"),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let users = body["value"].as_array().expect("value");
    assert!(users.iter().all(|u| u[&ext].is_string()));
    assert!(
        users
            .iter()
            .all(|u| u["assignedLicenses"].as_array().is_some_and(Vec::is_empty))
    );
    // Users are found by their GUID-style UPN too.
    let upn = h.truth()[5]["upn"].as_str().expect("upn").to_string();
    let (s, _, body) = h.get(&tok, &format!("/v1.0/users/{upn}")).await;
    assert_eq!(
        (s, body["userPrincipalName"].as_str()),
        (200, Some(upn.as_str()))
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn user_realm_answers_per_domain_and_counts_lookups() {
    let h = Harness::workforce(50).await;
    for (user, viral) in [
        ("a@adatumstudents.edu", Some(true)),
        ("b@fabrikam.com", Some(false)),
        ("c@example.net", None),
    ] {
        let r = h
            .http
            .get(format!(
                "{}/common/userrealm?user={user}&api-version=2.1",
                h.base
            ))
            .send()
            .await
            .expect("realm");
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["IsViral"].as_bool(), viral, "{user}: {body}");
    }
    let stats = h.sim.stats();
    assert_eq!(stats.realm_lookups.get("fabrikam.com"), Some(&1));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn recorded_sign_ins_can_lag_like_graphs_sign_in_activity() {
    let h = Harness::start(SimConfig {
        users: 100,
        sign_in_lag_secs: 6 * 3600,
        ..SimConfig::default()
    })
    .await;
    let tok = h.token().await;
    let never = h
        .truth()
        .into_iter()
        .find(|t| t["kinds"].to_string().contains("never-signed-in"))
        .expect("never");
    let id = never["id"].as_str().expect("id").to_string();
    assert!(h.sim.record_sign_in(&id, true, true));
    let (_, _, u) = h
        .get(&tok, &format!("/v1.0/users/{id}?$select=signInActivity"))
        .await;
    assert!(u.get("signInActivity").is_none(), "not visible yet: {u}");
    h.sim.advance(Duration::from_secs(6 * 3600));
    let tok = h.token().await;
    let (_, _, u) = h
        .get(&tok, &format!("/v1.0/users/{id}?$select=signInActivity"))
        .await;
    assert!(
        u["signInActivity"]["lastSuccessfulSignInDateTime"].is_string(),
        "{u}"
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn usage_report_by_date_lists_only_that_days_activity() {
    let h = Harness::workforce(300).await;
    let tok = h.token().await;
    let day = (h.sim.now() - chrono::TimeDelta::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let r = h
        .http
        .get(format!(
            "{}/v1.0/reports/getOffice365ActiveUserDetail(date={day})",
            h.base
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("report");
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().expect("ascii").to_string();
    let csv = h
        .http
        .get(&loc)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("csv");
    let text = String::from_utf8(csv[3..].to_vec()).expect("utf8");
    for row in text.lines().skip(1) {
        let cols: Vec<&str> = row.split(',').collect();
        assert!(cols[11..17].contains(&day.as_str()), "{row}");
    }
    let old = (h.sim.now() - chrono::TimeDelta::days(40))
        .format("%Y-%m-%d")
        .to_string();
    let (s, _, body) = h
        .get(
            &tok,
            &format!("/v1.0/reports/getOffice365ActiveUserDetail(date={old})"),
        )
        .await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn users_count_is_an_advanced_query() {
    let h = Harness::workforce(120).await;
    let tok = h.token().await;
    let r = h
        .http
        .get(format!("{}/v1.0/users/$count", h.base))
        .bearer_auth(&tok)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("count");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("text"), "120");
    let (s, _, body) = h.get(&tok, "/v1.0/users/$count").await;
    assert_eq!(s, 400);
    assert_graph_error(&body, "Request_BadRequest");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn guest_state_filter_and_user_purpose_segment() {
    let h = Harness::workforce(400).await;
    let tok = h.token().await;
    let truth = h.truth();
    let (pending, _) = h.page_all(&tok, "/v1.0/users?$filter=externalUserState eq 'PendingAcceptance'&$select=id,externalUserState&$top=999").await;
    assert!(!pending.is_empty());
    assert!(
        pending
            .iter()
            .all(|u| u["externalUserState"] == "PendingAcceptance")
    );
    let room = truth
        .iter()
        .find(|t| t["mailbox"] == "room")
        .expect("a room");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/mailboxSettings/userPurpose",
                room["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!((s, body["value"].as_str()), (200, Some("room")));
    let guest = truth
        .iter()
        .find(|t| t["userType"] == "Guest")
        .expect("guest");
    let (s, _, body) = h
        .get(
            &tok,
            &format!(
                "/v1.0/users/{}/mailboxSettings",
                guest["id"].as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&body, "MailboxNotEnabledForRESTAPI");
    h.sim.shutdown().await;
}
