//! The simulator's own control API under `/_sim/` (a path Graph never uses), so
//! out-of-process tests can steer it: clock, faults, throttling, captured mail,
//! secret rotation, sign-ins, accounts enabled or disabled by people and other
//! apps, odd user records, PIM eligibility.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{Reply, Req};
use super::server::{Faults, State, to_value};
use super::tenant::{F_ELIGIBLE, F_ENABLED, Quirk, iso};
use super::throttle::ThrottleConfig;

fn err(status: u16, msg: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": "SimControl", "message": msg}}),
    )
}

pub fn handle(st: &State, r: &Req, rest: &[&str]) -> Reply {
    use hyper::Method as M;
    let body = r.json_body().unwrap_or(Value::Null);
    match (r.method.clone(), rest) {
        (M::GET, ["stats"]) => Reply::json(200, to_value(&st.stats.snapshot())),
        (M::DELETE, ["stats"]) => {
            st.stats.reset();
            Reply::empty(204)
        }
        (M::GET, ["clock"]) => Reply::json(200, json!({"now": st.clock.now().to_rfc3339()})),
        (M::POST, ["clock", "advance"]) => {
            let Some(secs) = body["seconds"].as_u64() else {
                return err(400, "body must be {\"seconds\": N}");
            };
            st.clock.advance(Duration::from_secs(secs));
            Reply::json(200, json!({"now": st.clock.now().to_rfc3339()}))
        }
        (M::GET, ["faults"]) => Reply::json(200, to_value(&*st.lock(&st.faults))),
        (M::POST, ["faults"]) => match serde_json::from_value::<Faults>(body) {
            Ok(f) => {
                *st.lock(&st.faults) = f;
                Reply::empty(204)
            }
            Err(e) => err(400, &format!("bad faults: {e}")),
        },
        (M::DELETE, ["faults"]) => {
            *st.lock(&st.faults) = Faults::default();
            Reply::empty(204)
        }
        (M::GET, ["throttle"]) => Reply::json(200, to_value(&st.lock(&st.throttle).config)),
        (M::POST, ["throttle"]) => match serde_json::from_value::<ThrottleConfig>(body) {
            Ok(c) => {
                let mut t = st.lock(&st.throttle);
                t.config = c;
                t.reset();
                Reply::empty(204)
            }
            Err(e) => err(400, &format!("bad throttle config: {e}")),
        },
        (M::GET, ["mail"]) => Reply::json(200, json!({"value": to_value(&*st.lock(&st.mail))})),
        (M::DELETE, ["mail"]) => {
            st.lock(&st.mail).clear();
            Reply::empty(204)
        }
        (M::POST, ["secret", "rotate"]) => {
            let now = st.now();
            let s = st.lock(&st.auth).rotate(now);
            Reply::json(200, json!({"clientSecret": s}))
        }
        (M::POST, ["token-lifetime"]) => {
            let Some(secs) = body["seconds"].as_i64() else {
                return err(400, "body must be {\"seconds\": N}");
            };
            st.lock(&st.auth).token_lifetime_secs = secs;
            Reply::empty(204)
        }
        (M::POST, ["report-settings"]) => {
            let v = body["displayConcealedNames"].as_bool().unwrap_or(true);
            st.concealed.store(v, Ordering::SeqCst);
            Reply::empty(204)
        }
        (M::POST, ["users", id, "signin"]) => {
            let interactive = body["interactive"].as_bool().unwrap_or(true);
            let success = body["success"].as_bool().unwrap_or(true);
            match record_sign_in(st, id, interactive, success) {
                Some(at) => Reply::json(200, json!({"at": at})),
                None => err(404, "no such user"),
            }
        }
        (M::POST, ["users", id, "usage"]) => {
            let service = match body["service"].as_str().unwrap_or("exchange") {
                "exchange" => 0,
                "onedrive" => 1,
                "sharepoint" => 2,
                "teams" => 3,
                _ => return err(400, "service must be exchange|onedrive|sharepoint|teams"),
            };
            let now = st.now();
            let mut t = st.tenant_write();
            let Some(i) = t.resolve(id) else {
                return err(404, "no such user");
            };
            t.users[i as usize].usage[service] = now;
            Reply::json(200, json!({"at": iso(now)}))
        }
        (M::POST, ["users", id, "id-token"]) => {
            let audience = body["audience"].as_str();
            let age = body["authAgeSecs"].as_i64().unwrap_or(0);
            let lifetime = body["lifetimeSecs"].as_i64().unwrap_or(3600);
            match super::auth::issue_user_token(st, id, audience, age, lifetime) {
                Some(t) => Reply::json(200, json!({"idToken": t})),
                None => err(404, "no such user"),
            }
        }
        (M::POST, ["users", id, "reenable-by-person"]) => match reenable_by_person(st, id) {
            Some(at) => Reply::json(200, json!({"at": at})),
            None => err(404, "no such user"),
        },
        (M::POST, ["users", id, "set-enabled"]) => {
            let enabled = body.get("enabled").and_then(Value::as_bool);
            let by = body.get("by").and_then(Value::as_str).unwrap_or("person");
            match enabled.map(|e| set_enabled(st, id, e, by)) {
                Some(Some(at)) => Reply::json(200, json!({"at": at})),
                Some(None) => err(404, "no such user"),
                None => err(
                    400,
                    "body must be {\"enabled\": bool, \"by\": \"person\"|<app id>}",
                ),
            }
        }
        (M::POST, ["users", id, "quirk"]) => {
            let quirk = body
                .get("quirk")
                .cloned()
                .map(serde_json::from_value::<Option<Quirk>>);
            match quirk {
                Some(Ok(q)) => match set_quirk(st, id, q) {
                    true => Reply::json(200, json!({})),
                    false => err(404, "no such user"),
                },
                _ => err(400, "body must be {\"quirk\": <quirk> | null}"),
            }
        }
        (M::POST, ["users", id, "eligible-role"]) => match make_eligible(st, id) {
            true => Reply::json(200, json!({})),
            false => err(404, "no such user"),
        },
        (M::POST, ["pim"]) => {
            let on = body
                .get("licensed")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            st.no_pim.store(!on, std::sync::atomic::Ordering::SeqCst);
            Reply::json(200, json!({"licensed": on}))
        }
        _ => err(404, "unknown control endpoint"),
    }
}

/// Record a sign-in now. Failed interactive attempts move `lastSignInDateTime`
/// only; successes also move `lastSuccessfulSignInDateTime`. signInActivity
/// "can lag up to 24 h" (FACTS.md): with a configured lag the sign-in becomes
/// visible only once the lag has passed on the sim clock.
pub fn record_sign_in(st: &State, id: &str, interactive: bool, success: bool) -> Option<String> {
    let now = st.now();
    let i = st.tenant_read().resolve(id)?;
    st.lock(&st.pending_sign_ins).push(PendingSignIn {
        user: i,
        interactive,
        success,
        at: now,
    });
    apply_due_sign_ins(st);
    Some(iso(now))
}

/// A recorded sign-in not yet visible in signInActivity.
#[derive(Clone, Debug)]
pub struct PendingSignIn {
    pub user: u32,
    pub interactive: bool,
    pub success: bool,
    pub at: i64,
}

/// Move sign-ins whose lag has passed into the tenant.
pub fn apply_due_sign_ins(st: &State) {
    let now = st.now();
    let due: Vec<PendingSignIn> = {
        let mut pending = st.lock(&st.pending_sign_ins);
        if pending.is_empty() {
            return;
        }
        let (due, wait): (Vec<_>, Vec<_>) = pending
            .drain(..)
            .partition(|p| p.at + st.sign_in_lag_secs <= now);
        *pending = wait;
        due
    };
    if due.is_empty() {
        return;
    }
    let mut t = st.tenant_write();
    for p in due {
        let u = &mut t.users[p.user as usize];
        if p.interactive {
            u.last_interactive = u.last_interactive.max(p.at);
        } else {
            u.last_noninteractive = u.last_noninteractive.max(p.at);
        }
        if p.success {
            u.last_success = u.last_success.max(p.at);
        }
    }
}

/// An administrator (a person, not our app) re-enables the account: the audit
/// log shows "Enable account" initiated by a user.
pub fn reenable_by_person(st: &State, id: &str) -> Option<String> {
    let now = st.now();
    let mut t = st.tenant_write();
    let i = t.resolve(id)?;
    let admin = t
        .users
        .iter()
        .position(|u| u.role == 1 && u.arch != super::tenant::Archetype::BreakGlass)
        .unwrap_or(0) as u32;
    t.users[i as usize].flags |= F_ENABLED;
    t.push_audit(
        now,
        "Enable account",
        i,
        Some(admin),
        "AccountEnabled",
        "[true]",
    );
    t.push_audit(
        now,
        "Update user",
        i,
        Some(admin),
        "AccountEnabled",
        "[true]",
    );
    Some(iso(now))
}

/// Someone enables or disables an account: a person (`by` = "person") or
/// another app (`by` = its app id, HR provisioning say). The audit log
/// shows `Enable account` / `Disable account` with that initiator.
pub fn set_enabled(st: &State, id: &str, enabled: bool, by: &str) -> Option<String> {
    let now = st.now();
    let mut t = st.tenant_write();
    let i = t.resolve(id)?;
    let admin = t
        .users
        .iter()
        .position(|u| u.role == 1 && u.arch != super::tenant::Archetype::BreakGlass)
        .unwrap_or(0) as u32;
    let person = (by == "person").then_some(admin);
    if enabled {
        t.users[i as usize].flags |= F_ENABLED;
    } else {
        t.users[i as usize].flags &= !F_ENABLED;
    }
    let activity = if enabled {
        "Enable account"
    } else {
        "Disable account"
    };
    let value = if enabled { "[true]" } else { "[false]" };
    t.push_audit(now, activity, i, person, "AccountEnabled", value);
    if person.is_none()
        && let Some(e) = t.audits.last_mut()
    {
        e.by_app = Some(by.to_owned());
    }
    Some(iso(now))
}

/// Makes the next records Graph sends for the user odd (or normal again).
pub fn set_quirk(st: &State, id: &str, quirk: Option<Quirk>) -> bool {
    let mut t = st.tenant_write();
    let Some(i) = t.resolve(id) else {
        return false;
    };
    match quirk {
        Some(q) => t.quirks.insert(i, q),
        None => t.quirks.remove(&i),
    };
    true
}

/// Makes the user a PIM-eligible Global Administrator (not active).
/// Records that `inviter` (a person) invited `guest` now: the `Invite
/// external user` audit Entra writes.
pub fn record_invitation(st: &State, guest: &str, inviter: &str) -> bool {
    let now = st.now();
    let mut t = st.tenant_write();
    let (Some(g), Some(by)) = (t.resolve(guest), t.resolve(inviter)) else {
        return false;
    };
    t.push_audit(now, "Invite external user", g, Some(by), "", "");
    true
}

/// Sets (or, with `None`, removes) the guest's sponsor.
pub fn set_sponsor(st: &State, guest: &str, sponsor: Option<&str>) -> bool {
    let mut t = st.tenant_write();
    let Some(g) = t.resolve(guest) else {
        return false;
    };
    let s = match sponsor {
        Some(id) => match t.resolve(id) {
            Some(s) => Some(s),
            None => return false,
        },
        None => None,
    };
    t.sponsors.insert(g, s);
    true
}

pub fn make_eligible(st: &State, id: &str) -> bool {
    let mut t = st.tenant_write();
    let Some(i) = t.resolve(id) else {
        return false;
    };
    let u = &mut t.users[i as usize];
    u.role = 1;
    u.flags |= F_ELIGIBLE;
    true
}
