//! Issue 13, "keep" links: an owner answers through the link of a
//! notification, over real HTTP against `dormant serve`'s router, on the
//! simulator with its clock (and dormant's) moved a week at a time.
//! Forged, tampered, expired and reused links change nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use dormant::functions::catalog;
use dormant::host::Application;
use dormant::lifecycle::attest::Answer;
use dormant::lifecycle::{ActionKind, Case, CaseStatus};
use dormant::policy::HoldKind;
use dormant::report::Summary;
use dormant::store::REPORTS_CONTAINER;

use crate::safety::Tenant;

const PUBLIC: &str = "https://dormant-func.example.net";
const KEY: &str = "attest-key-of-the-integration-tests-0123456789";
const LINK: &str = "https://dormant-func.example.net/api/attest/";

/// A week to the disable, delete 30 days after the licenses; a keep holds
/// 30 days.
const SETTINGS: &[(&str, &str)] = &[
    ("DORMANT_POLICY__PHASES__DISABLE", "7"),
    ("DORMANT_POLICY__PHASES__CONVERT_MAILBOX", "7"),
    ("DORMANT_POLICY__PHASES__REMOVE_LICENSES", "7"),
    ("DORMANT_POLICY__PHASES__DELETE", "37"),
    ("DORMANT_POLICY__ATTEST__KEEP_DAYS", "30"),
    ("DORMANT_ATTEST_KEY", KEY),
    ("DORMANT_PUBLIC_URL", PUBLIC),
];

/// A tenant whose first night opened cases and sent their mail, served
/// over HTTP; a user with a case that plans a disable, its case, and the
/// two links of its mail.
struct Scene {
    t: Tenant,
    base: String,
    http: reqwest::Client,
    user: String,
    case: Case,
    keep: String,
    let_go: String,
    mail: String,
}

impl Scene {
    async fn start(seed: u64, settings: &[(&str, &str)]) -> Scene {
        let t = Tenant::start(300, seed, 0, settings).await;
        t.day_of_work().await; // open, notify
        let user = t.case_users_with(&[ActionKind::Disable]).await[0].clone();
        let case = t.open_case(&user).await.expect("case");
        assert!(
            case.is_done(ActionKind::Notify),
            "notified on the first night"
        );
        let mail = t
            .sim
            .mail()
            .into_iter()
            .find(|m| m.body.contains(&format!("case {}", case.id)))
            .map(|m| m.body)
            .expect("the case's mail");
        let links: Vec<String> =
            regex::Regex::new(r"https://dormant-func\.example\.net/api/attest/[A-Za-z0-9_-]+")
                .expect("regex")
                .find_iter(&mail)
                .map(|m| m.as_str().to_owned())
                .collect();
        let (keep, let_go) = match links.as_slice() {
            [keep, let_go] => (keep.clone(), let_go.clone()),
            other => (other.first().cloned().unwrap_or_default(), String::new()),
        };
        let app = Application::bind(0).await.expect("bind");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.serve(catalog(t.ctx.clone()), std::future::pending()));
        Scene {
            t,
            base,
            http: reqwest::Client::new(),
            user,
            case,
            keep,
            let_go,
            mail,
        }
    }

    /// `link` (a public link, or a bare token) on this process.
    fn local(&self, link: &str) -> String {
        format!(
            "{}/api/attest/{}",
            self.base,
            link.strip_prefix(LINK).unwrap_or(link)
        )
    }

    async fn get(&self, link: &str) -> (u16, String) {
        let r = self.http.get(self.local(link)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn post(&self, link: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.local(link))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("answer=from-the-form")
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// POST asking for JSON: (status, error code).
    async fn post_json(&self, link: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.local(link))
            .header("accept", "application/json")
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.json().await.expect("a JSON body"))
    }

    /// What must not change when a link is refused: the case (open, as
    /// it was), the account, and the audit (no `attest` line).
    async fn assert_unchanged(&self, before: &Case) {
        let now = self.t.open_case(&self.user).await.expect("still open");
        assert_eq!(&now, before, "the case changed");
        assert!(now.attestation.is_none());
        assert_eq!(self.t.enabled(&self.user).await, Some(true));
        assert!(
            !self
                .t
                .steps_of(&self.user)
                .await
                .contains(&"attest".to_owned()),
            "a refused link left an attest line"
        );
        assert_eq!(
            self.t.cases().hold_of(&self.user).await.expect("hold"),
            None
        );
    }

    async fn summary(&self) -> Summary {
        let blob = self
            .t
            .ctx
            .store
            .get(REPORTS_CONTAINER, "latest/summary.json")
            .await
            .expect("summary");
        serde_json::from_slice(&blob.body).expect("summary JSON")
    }
}

fn token_of(link: &str) -> &str {
    link.strip_prefix(LINK).expect("a dormant link")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_names_the_next_step_and_its_date_and_carries_both_links() {
    let s = Scene::start(131, SETTINGS).await;
    let date = |k| {
        s.case
            .due_at(k)
            .expect("planned")
            .format("%Y-%m-%d")
            .to_string()
    };
    let sentence = format!(
        "the account will be disabled on {} and deleted on {}",
        date(ActionKind::Disable),
        date(ActionKind::Delete)
    );
    assert!(s.mail.contains(&sentence), "{}", s.mail);
    assert!(
        s.keep.starts_with(LINK) && s.let_go.starts_with(LINK),
        "{}",
        s.mail
    );
    assert_ne!(s.keep, s.let_go);
    assert!(
        s.mail.contains(&format!(
            "The links work until {}",
            date(ActionKind::Disable)
        )),
        "{}",
        s.mail
    );
    // The notify line says the links went out, and the report counts it.
    let notify =
        s.t.lines_of(&s.user)
            .await
            .into_iter()
            .find(|r| r.step == "notify")
            .expect("notify line");
    assert!(
        notify
            .detail
            .as_deref()
            .is_some_and(|d| d.ends_with(";links")),
        "{notify:?}"
    );
    s.t.days(1.0);
    s.t.night().await;
    let summary = s.summary().await;
    assert!(summary.attestation.asked >= 1, "{:?}", summary.attestation);
    assert_eq!(
        summary.attestation.asked, summary.attestation.no_answer,
        "nobody answered yet"
    );
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_keeps_the_account_through_the_link_and_it_is_held_for_keep_days() {
    let s = Scene::start(132, SETTINGS).await;
    // The page: who, what happens when, two forms. Looking changes nothing.
    let (status, page) = s.get(&s.keep).await;
    assert_eq!(status, 200, "{page}");
    let name = s.t.sim.with_tenant(|t| {
        (0..t.users.len() as u32)
            .find(|&i| t.user_id(i) == s.user)
            .map(|i| t.display_name(i))
            .expect("the user")
    });
    let disable = s.case.due_at(ActionKind::Disable).expect("disable");
    assert!(
        page.contains(&dormant::report::html::escape(&name)),
        "{page}"
    );
    assert!(
        page.contains(&format!("disabled on {}", disable.format("%Y-%m-%d"))),
        "{page}"
    );
    assert_eq!(page.matches("<form method=\"post\"").count(), 2, "{page}");
    assert!(!page.contains("<script"), "no script needed");
    assert!(
        page.contains(&format!("action=\"/api/attest/{}\"", token_of(&s.let_go))),
        "the page offers the other answer too"
    );
    assert_eq!(s.t.open_case(&s.user).await.as_ref(), Some(&s.case));

    // The answer.
    let (status, body) = s.post(&s.keep).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("left alone until"), "{body}");
    assert!(s.t.open_case(&s.user).await.is_none(), "the case ended");
    let closed = s.t.closed_case(&s.user).await;
    assert_eq!(closed.id, s.case.id);
    assert_eq!(closed.status, CaseStatus::Cancelled);
    assert_eq!(closed.reason.as_deref(), Some("kept"));
    assert_eq!(
        closed.attestation.as_ref().map(|a| a.answer),
        Some(Answer::Keep)
    );
    let hold =
        s.t.cases()
            .hold_of(&s.user)
            .await
            .expect("hold")
            .expect("held");
    assert_eq!(hold.kind, HoldKind::Kept);
    let lines = s.t.lines_of(&s.user).await;
    let attest = lines
        .iter()
        .find(|r| r.step == "attest")
        .expect("the attest line");
    assert_eq!(attest.detail.as_deref(), Some("keep"));
    assert_eq!(attest.case.as_deref(), Some(s.case.id.as_str()));
    assert!(
        lines
            .iter()
            .any(|r| r.step == "cancel" && r.detail.as_deref() == Some("kept"))
    );
    // Ids only: the log never names the user.
    let text = serde_json::to_string(&lines).expect("json");
    assert!(!text.contains(&name), "{text}");

    // Held while the keep lasts: weeks past the disable day, never disabled.
    for _ in 0..3 {
        s.t.days(7.0);
        s.t.day_of_work().await;
        assert!(
            s.t.open_case(&s.user).await.is_none(),
            "no new case while kept"
        );
        assert_eq!(s.t.enabled(&s.user).await, Some(true), "never disabled");
    }
    let row = s.t.rows().await.remove(&s.user).expect("reported");
    assert_eq!(row.verdict, "review");
    assert!(row.flags.iter().any(|f| f == "kept"), "{:?}", row.flags);
    let summary = s.summary().await;
    assert!(summary.attestation.kept >= 1, "{:?}", summary.attestation);

    // Thirty days after the keep it ends: the user (still inactive) gets a
    // new case like anyone else.
    s.t.days(10.0);
    s.t.day_of_work().await;
    let again =
        s.t.open_case(&s.user)
            .await
            .expect("a new case once the keep ended");
    assert_ne!(again.id, s.case.id);
    assert!(!s.t.rows().await[&s.user].flags.iter().any(|f| f == "kept"));
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn let_go_is_recorded_and_the_case_goes_on_to_the_disable() {
    let s = Scene::start(133, SETTINGS).await;
    let (status, body) = s.post(&s.let_go).await;
    assert_eq!(status, 200, "{body}");
    let case = s.t.open_case(&s.user).await.expect("still open");
    assert_eq!(
        case.attestation.as_ref().map(|a| a.answer),
        Some(Answer::LetGo)
    );
    assert!(case.attestation.as_ref().is_some_and(|a| a.recorded));
    assert_eq!(
        (case.plan.clone(), case.status),
        (s.case.plan.clone(), s.case.status)
    );
    let attest: Vec<_> =
        s.t.lines_of(&s.user)
            .await
            .into_iter()
            .filter(|r| r.step == "attest")
            .collect();
    assert_eq!(attest.len(), 1);
    assert_eq!(attest[0].detail.as_deref(), Some("let-go"));
    assert_eq!(s.t.cases().hold_of(&s.user).await.expect("hold"), None);

    s.t.days(3.0);
    s.t.day_of_work().await;
    assert_eq!(s.t.enabled(&s.user).await, Some(true), "not before its day");
    s.t.days(4.0);
    s.t.day_of_work().await;
    assert_eq!(
        s.t.enabled(&s.user).await,
        Some(false),
        "disabled on its day"
    );
    let summary = s.summary().await;
    assert!(summary.attestation.let_go >= 1, "{:?}", summary.attestation);
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_link_changes_nothing() {
    let s = Scene::start(134, SETTINGS).await;
    // A keep for the same case and user, signed with another key.
    let forger = dormant::lifecycle::attest::AttestKey::new(
        "the-forgers-own-key-0123456789abcdefghij".to_owned().into(),
    )
    .expect("key");
    let forged = forger
        .sign(&dormant::lifecycle::attest::Claims {
            case: s.case.id.clone(),
            user: dormant::ids::ObjectId::parse(&s.user).expect("id"),
            answer: Answer::Keep,
            expires: s.case.due_at(ActionKind::Disable).expect("disable"),
        })
        .expect("signs");
    let (status, body) = s.post_json(&forged).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forged-link");
    let (status, page) = s.get(&forged).await;
    assert_eq!(status, 403);
    assert!(
        page.contains("not genuine") && !page.contains(&forged),
        "{page}"
    );
    // Garbage is not a link at all.
    let (status, body) = s.post_json("not-a-token").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad-link");
    s.assert_unchanged(&s.case).await;
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_link_changes_nothing() {
    let s = Scene::start(135, SETTINGS).await;
    // The let-go link with its answer byte turned into "keep".
    let mut bytes = B64.decode(token_of(&s.let_go)).expect("base64");
    assert_eq!(bytes[1], 2, "the let-go answer byte");
    bytes[1] = 1;
    let tampered = B64.encode(&bytes);
    let (status, body) = s.post_json(&tampered).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forged-link");
    // And one naming another case.
    let mut bytes = B64.decode(token_of(&s.keep)).expect("base64");
    let at = bytes.len() - 33;
    bytes[at] ^= 0x01;
    let (status, _) = s.post_json(&B64.encode(&bytes)).await;
    assert_eq!(status, 403);
    s.assert_unchanged(&s.case).await;
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_changes_nothing() {
    let s = Scene::start(136, SETTINGS).await;
    // Past the disable day, before any night acted on it.
    s.t.days(7.5);
    let (status, body) = s.post_json(&s.keep).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "link-expired");
    let (status, page) = s.get(&s.keep).await;
    assert_eq!(status, 410);
    assert!(page.contains("expired"), "{page}");
    s.assert_unchanged(&s.case).await;
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_link_changes_nothing_and_says_it_was_answered() {
    let s = Scene::start(137, SETTINGS).await;
    assert_eq!(s.post(&s.let_go).await.0, 200);
    let answered = s.t.open_case(&s.user).await.expect("open");
    // The same link again, and the other answer after it.
    for link in [&s.let_go, &s.keep] {
        let (status, body) = s.post_json(link).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "already-answered");
        let (status, page) = s.get(link).await;
        assert_eq!(status, 409);
        assert!(page.contains("Already answered"), "{page}");
    }
    assert_eq!(s.t.open_case(&s.user).await.as_ref(), Some(&answered));
    let attest =
        s.t.steps_of(&s.user)
            .await
            .into_iter()
            .filter(|st| st == "attest")
            .count();
    assert_eq!(attest, 1, "one answer, one line");
    assert_eq!(s.t.cases().hold_of(&s.user).await.expect("hold"), None);
    assert_eq!(s.t.enabled(&s.user).await, Some(true));
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_case_that_ended_is_refused() {
    let s = Scene::start(138, SETTINGS).await;
    // The user signs in: the next night cancels the case.
    assert!(s.t.sim.record_sign_in(&s.user, true, true));
    s.t.days(1.0);
    s.t.day_of_work().await;
    assert!(
        s.t.open_case(&s.user).await.is_none(),
        "cancelled: active again"
    );
    let before = s.t.closed_case(&s.user).await;
    let (status, body) = s.post_json(&s.keep).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "case-ended");
    assert_eq!(s.t.closed_case(&s.user).await, before);
    assert_eq!(s.t.cases().hold_of(&s.user).await.expect("hold"), None);
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_mail_has_no_links_and_the_endpoint_says_it_is_not_configured() {
    let settings: Vec<(&str, &str)> = SETTINGS
        .iter()
        .copied()
        .filter(|(k, _)| *k != "DORMANT_ATTEST_KEY")
        .collect();
    let s = Scene::start(139, &settings).await;
    assert!(s.keep.is_empty() && s.let_go.is_empty(), "{}", s.mail);
    assert!(s.mail.contains("disabled on"), "{}", s.mail);
    let (status, body) = s.post_json("anything").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["message"], "attestation is not configured");
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_body_carries_both_links_with_ids_only() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
    let seen2 = seen.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: bytes::Bytes| {
            let seen = seen2.clone();
            async move {
                seen.lock().expect("seen").push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut settings = SETTINGS.to_vec();
    settings.push(("DORMANT_POLICY__NOTIFY__WEBHOOK", hook.as_str()));
    settings.push(("DORMANT_POLICY__NOTIFY__WEBHOOK_SECRET", "whsec-attest"));
    let s = Scene::start(140, &settings).await;
    let bodies = seen.lock().expect("seen").clone();
    let body: serde_json::Value = bodies
        .iter()
        .map(|b| serde_json::from_slice::<serde_json::Value>(b).expect("json"))
        .find(|v| v["case"] == s.case.id.as_str())
        .expect("the case's webhook");
    assert_eq!(
        body["keepUrl"],
        s.keep.as_str(),
        "the mail's links, the same"
    );
    assert_eq!(body["letGoUrl"], s.let_go.as_str());
    assert!(body["linksExpireAt"].is_string() && body["disableAt"].is_string());
    let text = body.to_string();
    assert!(!text.contains('@'), "ids and URLs only: {text}");
    // The receiver's link works like the mail's.
    assert_eq!(s.get(body["keepUrl"].as_str().expect("url")).await.0, 200);
    s.t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_stored_before_a_crash_is_finished_by_the_next_night_with_its_line() {
    let s = Scene::start(141, SETTINGS).await;
    // The answer is in the case, and then the process died: no line, no
    // hold, the case still open.
    let cases = s.t.cases();
    let (mut case, etag) = cases.open_case(&s.user).await.expect("read").expect("open");
    let at = s.t.clock.now();
    let mut record =
        dormant::store::audit::AuditRecord::new("attest", dormant::store::audit::Outcome::Done);
    record.time = at;
    record.case = Some(case.id.clone());
    record.user = Some(case.user.clone());
    record.detail = Some("keep".into());
    case.attestation = Some(dormant::lifecycle::attest::Attestation {
        answer: Answer::Keep,
        at,
        record,
        recorded: false,
    });
    cases.save(&case, &etag).await.expect("save");
    // A second POST says it was answered, and changes nothing.
    let (status, body) = s.post_json(&s.keep).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, "already-answered".into())
    );

    s.t.days(1.0);
    s.t.day_of_work().await;
    assert!(s.t.open_case(&s.user).await.is_none());
    let closed = s.t.closed_case(&s.user).await;
    assert_eq!(closed.reason.as_deref(), Some("kept"));
    assert!(closed.attestation.as_ref().is_some_and(|a| a.recorded));
    let attest: Vec<_> =
        s.t.lines_of(&s.user)
            .await
            .into_iter()
            .filter(|r| r.step == "attest")
            .collect();
    assert_eq!(attest.len(), 1, "the line, once");
    let hold =
        s.t.cases()
            .hold_of(&s.user)
            .await
            .expect("hold")
            .expect("held");
    assert_eq!((hold.kind, hold.since), (HoldKind::Kept, at));
    s.t.days(7.0);
    s.t.day_of_work().await;
    assert_eq!(s.t.enabled(&s.user).await, Some(true));
    s.t.sim.shutdown().await;
}
