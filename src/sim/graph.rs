//! Microsoft Graph v1.0 and beta over the simulated tenant.
//!
//! Each handler states the Graph behaviour it reproduces; see FACTS.md.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::auth::{Audience, check_token, graph_unauthorized};
use super::http::{Body, Reply, Req, RequestIds, graph_error};
use super::ids;
use super::odata::{self, Filter};
use super::server::{CapturedMail, State};
use super::tenant::*;
use super::throttle::{Bucket, Cost};

const DAY: i64 = 86_400;

/// Characters escaped in values of `@odata.nextLink` query parameters.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'\'')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'=');

/// `lastSignInDateTime`: interactive attempts, successful or failed, recorded since April 2020.
pub fn visible_interactive(u: &UserRec) -> i64 {
    if u.last_interactive >= interactive_epoch() {
        u.last_interactive
    } else {
        0
    }
}
/// `lastNonInteractiveSignInDateTime`: recorded since May 2020.
pub fn visible_noninteractive(u: &UserRec) -> i64 {
    if u.last_noninteractive >= noninteractive_epoch() {
        u.last_noninteractive
    } else {
        0
    }
}
/// `lastSuccessfulSignInDateTime`: only since 2023-12-01, not back-filled.
pub fn visible_success(u: &UserRec) -> i64 {
    if u.last_success >= success_epoch() {
        u.last_success
    } else {
        0
    }
}

fn not_found(id: &str, ids: &RequestIds) -> Reply {
    graph_error(
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
        ids,
    )
}

fn bad_request(msg: &str, ids: &RequestIds) -> Reply {
    graph_error(400, "Request_BadRequest", msg, ids)
}

/// Soft-deleted users are kept 30 days, then purged for good.
fn gone(u: &UserRec, now: i64) -> bool {
    u.flags & F_PURGED != 0 || (u.deleted_at != 0 && now - u.deleted_at >= 30 * DAY)
}
fn live(u: &UserRec) -> bool {
    u.deleted_at == 0 && u.flags & F_PURGED == 0
}
fn in_recycle_bin(u: &UserRec, now: i64) -> bool {
    u.deleted_at != 0 && !gone(u, now)
}

/// What a request costs against the throttling budgets.
fn cost_of(r: &Req, rest: &[&str]) -> Cost {
    let first = rest.first().copied().unwrap_or("");
    let write = r.method != hyper::Method::GET;
    if first == "reports" {
        let name = rest
            .get(1)
            .map(|s| s.split('(').next().unwrap_or(s).to_string())
            .unwrap_or_default();
        return Cost {
            resource_units: 1,
            write: false,
            bucket: Bucket::Report(name),
        };
    }
    if first == "auditLogs" {
        return Cost {
            resource_units: 1,
            write: false,
            bucket: Bucket::Audits,
        };
    }
    if first == "invitations" {
        return Cost {
            resource_units: 1,
            write: true,
            bucket: Bucket::Invitations,
        };
    }
    let mut ru: i32 = match (r.method.clone(), rest) {
        (hyper::Method::GET, ["users"]) => 2,
        (hyper::Method::GET, ["groups", _, "transitiveMembers", ..]) => 5,
        (hyper::Method::GET, ["groups", _, "members", ..]) => 3,
        (hyper::Method::GET, ["subscribedSkus"]) => 3,
        (hyper::Method::GET, ["users", _, "transitiveMemberOf", ..]) => 2,
        (hyper::Method::GET, ["users", _, "memberOf", ..]) => 2,
        _ => 1,
    };
    if r.query_value("$select").is_some() {
        ru -= 1;
    }
    if r.query_value("$expand").is_some() {
        ru += 1;
    }
    if r.query_value("$top")
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|t| t < 20)
    {
        ru -= 1;
    }
    Cost {
        resource_units: ru.max(1) as u32,
        write,
        bucket: Bucket::Identity,
    }
}

/// Graph's 429 body and headers.
pub fn throttled_reply(
    st: &State,
    retry_after: u64,
    information: &str,
    limit: &str,
    ids: &RequestIds,
) -> Reply {
    st.stats.throttled.fetch_add(1, Ordering::Relaxed);
    let (app, tid) = (st.client_id.clone(), st.tenant_id.clone());
    let mut reply = graph_error(429, "TooManyRequests", "Please retry again later.", ids);
    if let Body::Json(v) = &mut reply.body {
        v["error"]["innerError"]["code"] = json!("429");
        v["error"]["innerError"]["status"] = json!("429");
        v["error"]["innerError"]["message"] = json!("Please retry after");
    }
    reply
        .with_header("Retry-After", retry_after.to_string())
        .with_header(
            "x-ms-throttle-scope",
            format!("Tenant_Application/{limit}/{app}/{tid}"),
        )
        .with_header("x-ms-throttle-information", information)
}

/// Entry point for `/v1.0/...` and `/beta/...`.
pub fn route(
    st: &State,
    r: &Req,
    ids: &RequestIds,
    version: &str,
    rest: &[&str],
) -> (Reply, usize) {
    st.stats.graph_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(reply) = graph_unauthorized(&check_token(st, r, Audience::Graph), ids) {
        return (reply, 0);
    }
    super::control::apply_due_sign_ins(st);
    let route_name = format!("{} {}", r.method, route_label(rest));
    st.stats.bump_route(route_name.clone());
    if rest == ["$batch"] {
        return batch(st, r, ids, version);
    }
    let cost = cost_of(r, rest);
    let (users, b2c) = {
        let t = st.tenant_read();
        (t.users.len(), t.kind == TenantKind::B2c)
    };
    let charged = st
        .lock(&st.throttle)
        .charge(st.clock.now_millis(), &cost, users, b2c);
    if let Err(t) = charged {
        if let Ok(mut m) = st.stats.throttled_by_route.lock() {
            *m.entry(route_name).or_default() += 1;
        }
        return (
            throttled_reply(st, t.retry_after, t.information, t.limit, ids),
            0,
        );
    }
    let (mut reply, items) = graph_inner(st, r, ids, version, rest);
    if reply.status < 400 {
        reply = reply.with_header("x-ms-resource-unit", cost.resource_units.to_string());
        let frac = st.lock(&st.throttle).ru_fraction(users);
        if frac >= 0.8 {
            reply = reply.with_header(
                "x-ms-throttle-limit-percentage",
                format!("{:.1}", frac.min(1.8)),
            );
        }
    }
    (reply, items)
}

/// A stable label for stats: ids replaced by `{id}`.
fn route_label(rest: &[&str]) -> String {
    rest.iter()
        .enumerate()
        .map(|(n, s)| {
            if n > 0 && (s.contains('@') || uuid::Uuid::parse_str(s).is_ok()) {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn graph_inner(st: &State, r: &Req, ids: &RequestIds, v: &str, rest: &[&str]) -> (Reply, usize) {
    use hyper::Method as M;
    let m = r.method.clone();
    let one = |reply: Reply| (reply, 0usize);
    match (m, rest) {
        (M::GET, ["users"]) => list_users(st, r, ids, v),
        (M::GET, ["users", "$count"]) => one(count_users(st, r, ids)),
        (M::GET, ["users", id]) => one(get_user(st, r, ids, v, id)),
        (M::PATCH, ["users", id]) => one(patch_user(st, r, ids, id)),
        (M::DELETE, ["users", id]) => one(delete_user(st, ids, id)),
        (M::POST, ["users", id, "revokeSignInSessions"]) => one(revoke(st, ids, v, id)),
        (M::POST, ["users", id, "assignLicense"]) => one(assign_license(st, r, ids, v, id)),
        (M::GET, ["users", id, "manager"]) => one(manager(st, ids, v, id)),
        (M::GET, ["users", id, "sponsors"]) => one(sponsors(st, ids, v, id)),
        (M::GET, ["users", id, "appRoleAssignments"]) => one(app_role_assignments(st, ids, v, id)),
        (M::GET, ["users", id, "mailboxSettings"]) => one(mailbox_settings(st, ids, v, id)),
        (M::GET, ["users", id, "mailboxSettings", "userPurpose"]) => {
            let mut reply = mailbox_settings(st, ids, v, id);
            if let Body::Json(b) = &reply.body {
                let ctx = format!("{}/userPurpose", b["@odata.context"].as_str().unwrap_or(""));
                reply.body = Body::Json(json!({"@odata.context": ctx, "value": b["userPurpose"]}));
            }
            one(reply)
        }
        (M::POST, ["users", id, "sendMail"]) => one(send_mail(st, r, ids, id)),
        (
            M::GET,
            [
                "users",
                id,
                kind @ ("transitiveMemberOf" | "memberOf"),
                cast @ ..,
            ],
        ) => one(member_of(
            st,
            ids,
            v,
            id,
            *kind == "transitiveMemberOf",
            cast.first().copied(),
        )),
        (M::GET, ["me", ..]) => one(graph_error(
            400,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
            ids,
        )),
        (M::GET, ["subscribedSkus"]) => one(subscribed_skus(st, v)),
        (M::GET, ["groups"]) => one(list_groups(st, v)),
        (M::GET, ["groups", id]) => one(get_group(st, ids, v, id)),
        (
            M::GET,
            [
                "groups",
                id,
                kind @ ("transitiveMembers" | "members"),
                cast @ ..,
            ],
        ) => {
            let Some(g) = st.tenant_read().group_index(id) else {
                return one(not_found(id, ids));
            };
            let users_only = cast.first() == Some(&"microsoft.graph.user");
            list_paged(
                st,
                r,
                ids,
                v,
                Listing::Group {
                    g,
                    transitive: *kind == "transitiveMembers",
                    users_only,
                },
            )
        }
        (M::GET, ["roleManagement", "directory", "roleAssignments"]) => {
            one(role_assignments(st, r, ids, v, false))
        }
        (
            M::GET,
            [
                "roleManagement",
                "directory",
                "roleEligibilityScheduleInstances",
            ],
        ) => {
            if st.no_pim.load(std::sync::atomic::Ordering::SeqCst) {
                // A tenant without Entra ID P2 has no PIM.
                one(graph_error(
                    400,
                    "AadPremiumLicenseRequired",
                    "The tenant needs an AAD Premium 2 license.",
                    ids,
                ))
            } else {
                one(role_assignments(st, r, ids, v, true))
            }
        }
        (M::GET, ["roleManagement", "directory", "roleDefinitions"]) => {
            one(role_definitions(v, st))
        }
        (M::GET, ["directory", "deletedItems", "microsoft.graph.user"]) => {
            list_paged(st, r, ids, v, Listing::Deleted)
        }
        (M::GET, ["directory", "deletedItems", id]) => one(get_deleted(st, r, ids, v, id)),
        (M::DELETE, ["directory", "deletedItems", id]) => one(purge_deleted(st, ids, id)),
        (M::POST, ["directory", "deletedItems", id, "restore"]) => {
            one(restore_deleted(st, ids, v, id))
        }
        (M::GET, ["reports", func]) if func.starts_with("getOffice365ActiveUserDetail(") => {
            one(super::report::redirect(st, ids, func))
        }
        (M::GET, ["admin", "reportSettings"]) => one(Reply::json(
            200,
            json!({
                "@odata.context": format!("{}/{v}/$metadata#admin/reportSettings/$entity", st.base_url),
                "displayConcealedNames": st.concealed.load(Ordering::SeqCst),
            }),
        )),
        (M::PATCH, ["admin", "reportSettings"]) => one(patch_report_settings(st, r, ids)),
        (M::POST, ["invitations"]) => one(invite(st, r, ids, v)),
        (M::GET, ["auditLogs", "directoryAudits"]) => one(directory_audits(st, r, ids, v)),
        (M::GET, ["organization"]) => one(organization(st, r, ids, v, None)),
        (M::GET, ["organization", id]) => one(organization(st, r, ids, v, Some(id))),
        (_, []) => one(graph_error(
            400,
            "BadRequest",
            "Resource not found for the segment ''.",
            ids,
        )),
        (_, [first, ..]) => one(graph_error(
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{first}'."),
            ids,
        )),
    }
}

// ---------------------------------------------------------------- users

/// Every user property the simulator serves, in Graph's order.
const USER_PROPS: [&str; 33] = [
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "accountEnabled",
    "assignedLicenses",
    "companyName",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "employeeId",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "identities",
    "licenseAssignmentStates",
    "mailNickname",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
    "onPremisesSyncEnabled",
    "otherMails",
    "proxyAddresses",
    "usageLocation",
    "userType",
    "signInActivity",
    "manager",
];
/// v1.0 returns this set when `$select` is absent.
const V1_DEFAULT: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];
const B2C_EXT: [&str; 2] = ["loyaltyTier", "marketingConsent"];

/// A parsed `$select`.
pub struct Selection {
    pub props: Vec<String>,
    pub explicit: bool,
}

impl Selection {
    fn has(&self, p: &str) -> bool {
        self.props.iter().any(|x| x == p)
    }
}

fn parse_select(t: &Tenant, r: &Req, version: &str) -> Result<Selection, String> {
    let Some(sel) = r.query_value("$select") else {
        let props: Vec<String> = if version == "beta" {
            USER_PROPS
                .iter()
                .filter(|p| **p != "signInActivity" && **p != "manager")
                .map(|s| s.to_string())
                .collect()
        } else {
            V1_DEFAULT.iter().map(|s| s.to_string()).collect()
        };
        return Ok(Selection {
            props,
            explicit: false,
        });
    };
    let mut props = Vec::new();
    for raw in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(p) = USER_PROPS.iter().find(|p| p.eq_ignore_ascii_case(raw)) {
            if *p == "manager" {
                return Err(format!(
                    "Parsing OData Select and Expand failed: Could not find a property named '{raw}' on type 'microsoft.graph.user'."
                ));
            }
            props.push(p.to_string());
            continue;
        }
        let ext = B2C_EXT
            .iter()
            .map(|e| format!("extension_{}_{e}", t.ext_app))
            .find(|e| e.eq_ignore_ascii_case(raw));
        match ext {
            Some(e) if t.kind == TenantKind::B2c => props.push(e),
            _ => {
                return Err(format!(
                    "Parsing OData Select and Expand failed: Could not find a property named '{raw}' on type 'microsoft.graph.user'."
                ));
            }
        }
    }
    Ok(Selection {
        props,
        explicit: true,
    })
}

/// A parsed `$expand`: only `manager`, optionally with its own `$select`.
fn parse_expand(r: &Req) -> Result<Option<Vec<String>>, String> {
    let Some(e) = r.query_value("$expand") else {
        return Ok(None);
    };
    let e = e.trim();
    let (name, inner) = match e.split_once('(') {
        Some((n, rest)) => (n.trim(), Some(rest.trim_end_matches(')'))),
        None => (e, None),
    };
    if !name.eq_ignore_ascii_case("manager") {
        return Err(format!(
            "Parsing OData Select and Expand failed: Could not find a property named '{name}' on type 'microsoft.graph.user'."
        ));
    }
    let mut props = vec!["id".to_string(), "displayName".to_string()];
    if let Some(inner) = inner {
        let sel = inner.trim().strip_prefix("$select=").unwrap_or("");
        props = Vec::new();
        for raw in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match USER_PROPS.iter().find(|p| {
                p.eq_ignore_ascii_case(raw) && **p != "manager" && **p != "signInActivity"
            }) {
                Some(p) => props.push(p.to_string()),
                None => {
                    return Err(format!(
                        "Parsing OData Select and Expand failed: Could not find a property named '{raw}' on type 'microsoft.graph.user'."
                    ));
                }
            }
        }
    }
    Ok(Some(props))
}

/// Add `manager` to a rendered user when `$expand=manager` asked for it
/// (left out when the user has none, as Graph does).
fn expand_manager(t: &Tenant, i: u32, expand: &Option<Vec<String>>, m: &mut Map<String, Value>) {
    let Some(props) = expand else { return };
    if let Some(mgr) = t.manager_of(i) {
        let sel = Selection {
            props: props.clone(),
            explicit: true,
        };
        let mut o = Map::new();
        o.insert("@odata.type".into(), json!("#microsoft.graph.user"));
        o.extend(render_user(t, mgr, &sel));
        m.insert("manager".into(), Value::Object(o));
    }
}

fn request_guid(t: &Tenant, i: u32, what: u64, at: i64) -> String {
    ids::guid_string(&ids::guid_for(ids::hash(&[t.seed, what, at as u64]), i))
}

/// Render user `i` with the selected properties.
pub fn render_user(t: &Tenant, i: u32, sel: &Selection) -> Map<String, Value> {
    let u = &t.users[i as usize];
    let quirk = t.quirks.get(&i).copied();
    let mut m = Map::new();
    for p in &sel.props {
        match (quirk, p.as_str()) {
            (Some(Quirk::PlaceholderSignIn), "signInActivity") => {
                let zero = "0001-01-01T00:00:00Z";
                m.insert(p.clone(), json!({
                    "lastSignInDateTime": zero, "lastSignInRequestId": null,
                    "lastNonInteractiveSignInDateTime": zero, "lastNonInteractiveSignInRequestId": null,
                    "lastSuccessfulSignInDateTime": zero, "lastSuccessfulSignInRequestId": null,
                }));
                continue;
            }
            (Some(Quirk::NullSignIn), "signInActivity") => {
                m.insert(p.clone(), json!({
                    "lastSignInDateTime": null, "lastSignInRequestId": null,
                    "lastNonInteractiveSignInDateTime": null, "lastNonInteractiveSignInRequestId": null,
                    "lastSuccessfulSignInDateTime": null, "lastSuccessfulSignInRequestId": null,
                }));
                continue;
            }
            (Some(Quirk::NullCollection), "assignedLicenses") => {
                m.insert(p.clone(), Value::Null);
                continue;
            }
            (Some(Quirk::BadDate), "createdDateTime") => {
                m.insert(p.clone(), json!("2019-13-45T25:61:00Z"));
                continue;
            }
            (Some(Quirk::UnknownUserType), "userType") => {
                m.insert(p.clone(), json!("FederatedMember"));
                continue;
            }
            _ => {}
        }
        let v = match p.as_str() {
            "id" => json!(t.user_id(i)),
            "businessPhones" => json!([]),
            "displayName" => json!(t.display_name(i)),
            "givenName" => match u.arch {
                Archetype::Service
                | Archetype::Shared
                | Archetype::Room
                | Archetype::BreakGlass => Value::Null,
                _ => json!(t.given_surname(i).0),
            },
            "surname" => match u.arch {
                Archetype::Service
                | Archetype::Shared
                | Archetype::Room
                | Archetype::BreakGlass => Value::Null,
                _ => json!(t.given_surname(i).1),
            },
            "jobTitle" => json!(t.job_title(i)),
            "mail" => json!(t.mail(i)),
            "mobilePhone"
            | "officeLocation"
            | "companyName"
            | "employeeId"
            | "onPremisesImmutableId" => {
                if p == "onPremisesImmutableId" && u.flags & F_SYNCED != 0 {
                    json!(
                        URL_SAFE_NO_PAD
                            .encode(ids::hash(&[t.seed, u64::from(i), 77]).to_be_bytes())
                    )
                } else {
                    Value::Null
                }
            }
            "onPremisesSamAccountName" => {
                if u.flags & F_SYNCED != 0 {
                    json!(format!("u{i}"))
                } else {
                    Value::Null
                }
            }
            "preferredLanguage" => json!("en-US"),
            "userPrincipalName" => {
                if u.deleted_at != 0 {
                    // Soft-deleted users' UPNs are prefixed with their object id (no dashes).
                    json!(format!("{}{}", t.user_id(i).replace('-', ""), t.upn(i)))
                } else {
                    json!(t.upn(i))
                }
            }
            "accountEnabled" => json!(u.enabled()),
            "assignedLicenses" => json!(
                SKUS.iter()
                    .enumerate()
                    .filter(|(b, _)| u.all_licenses() & (1 << b) != 0)
                    .map(|(_, s)| json!({"disabledPlans": [], "skuId": s.id}))
                    .collect::<Vec<_>>()
            ),
            "licenseAssignmentStates" => {
                let mut v = Vec::new();
                for (b, s) in SKUS.iter().enumerate() {
                    if u.licenses & (1 << b) != 0 {
                        v.push(json!({"assignedByGroup": null, "disabledPlans": [], "error": "None", "skuId": s.id, "state": "Active", "lastUpdatedDateTime": iso(u.created)}));
                    }
                    if u.group_licenses & (1 << b) != 0 {
                        v.push(json!({"assignedByGroup": t.group_id(G_LICENSING), "disabledPlans": [], "error": "None", "skuId": s.id, "state": "Active", "lastUpdatedDateTime": iso(u.created)}));
                    }
                }
                json!(v)
            }
            "createdDateTime" => json!(iso(u.created)),
            "creationType" => json!(t.creation_type(i)),
            "deletedDateTime" => json!(opt_iso(u.deleted_at)),
            "department" => json!(t.department(i)),
            "externalUserState" => {
                if u.arch.is_guest() {
                    json!(if u.flags & F_PENDING != 0 {
                        "PendingAcceptance"
                    } else {
                        "Accepted"
                    })
                } else {
                    Value::Null
                }
            }
            "externalUserStateChangeDateTime" => {
                if u.arch.is_guest() {
                    json!(iso(u.state_changed))
                } else {
                    Value::Null
                }
            }
            "identities" => json!(identities(t, i)),
            "mailNickname" => json!(t.upn(i).split('@').next().unwrap_or("").replace('#', "_")),
            "onPremisesSyncEnabled" => {
                if u.flags & F_SYNCED != 0 {
                    json!(true)
                } else {
                    Value::Null
                }
            }
            "otherMails" => match u.arch {
                Archetype::B2cLocal => json!([t.b2c_sign_in_name(i)]),
                _ => json!([]),
            },
            "proxyAddresses" => match t.mail(i) {
                Some(m) if !u.arch.is_guest() => json!([format!("SMTP:{m}")]),
                _ => json!([]),
            },
            // A stored attribute (set when licenses were first assigned); it stays
            // when licenses are removed, so they can be assigned back.
            "usageLocation" => {
                if u.all_licenses() != 0 || (!u.arch.is_guest() && t.kind == TenantKind::Workforce)
                {
                    json!("US")
                } else {
                    Value::Null
                }
            }
            "userType" => json!(t.user_type(i)),
            "signInActivity" => {
                let (a, b, c) = (
                    visible_interactive(u),
                    visible_noninteractive(u),
                    visible_success(u),
                );
                if a == 0 && b == 0 && c == 0 {
                    // Never signed in (as far as the logs know): Graph leaves the property out.
                    continue;
                }
                let rid = |what: u64, at: i64| {
                    if at == 0 {
                        Value::Null
                    } else {
                        json!(request_guid(t, i, what, at))
                    }
                };
                json!({
                    "lastSignInDateTime": opt_iso(a),
                    "lastSignInRequestId": rid(1, a),
                    "lastNonInteractiveSignInDateTime": opt_iso(b),
                    "lastNonInteractiveSignInRequestId": rid(2, b),
                    "lastSuccessfulSignInDateTime": opt_iso(c),
                    "lastSuccessfulSignInRequestId": rid(3, c),
                })
            }
            ext if ext.starts_with("extension_") => {
                if ext.ends_with("_loyaltyTier") {
                    json!(["bronze", "silver", "gold"][(u.name_key % 3) as usize])
                } else {
                    json!(u.name_key.is_multiple_of(2))
                }
            }
            _ => continue,
        };
        m.insert(p.clone(), v);
    }
    m
}

fn identities(t: &Tenant, i: u32) -> Vec<Value> {
    let u = &t.users[i as usize];
    let upn = json!({"signInType": "userPrincipalName", "issuer": t.domain, "issuerAssignedId": t.upn(i)});
    match u.arch {
        Archetype::B2cLocal => vec![
            json!({"signInType": "emailAddress", "issuer": t.domain, "issuerAssignedId": t.b2c_sign_in_name(i)}),
            upn,
        ],
        Archetype::B2cUserName => vec![
            json!({"signInType": "userName", "issuer": t.domain, "issuerAssignedId": t.b2c_sign_in_name(i)}),
            upn,
        ],
        Archetype::B2cSocial => vec![
            json!({"signInType": "federated", "issuer": if u.name_key.is_multiple_of(2) { "google.com" } else { "facebook.com" }, "issuerAssignedId": format!("{}", ids::hash(&[t.seed, u64::from(i), 5]) % 1_000_000_000_000)}),
        ],
        a if a.is_guest() => {
            let issuer = match (a, u.name_key % 3) {
                (Archetype::GuestViral, _) | (_, 0) => "ExternalAzureAD",
                (_, 1) => "MicrosoftAccount",
                _ => "mail",
            };
            // A guest who has not redeemed yet has only the tenant-issued UPN identity;
            // the home identity provider appears once the invitation is redeemed.
            if u.flags & F_PENDING != 0 && a != Archetype::GuestViral {
                vec![upn]
            } else {
                vec![json!({"signInType": "federated", "issuer": issuer, "issuerAssignedId": null})]
            }
        }
        _ => vec![upn],
    }
}

fn lookup(st: &State, key: &str, now: i64) -> Option<u32> {
    let t = st.tenant_read();
    let i = t.resolve(key)?;
    let u = &t.users[i as usize];
    (live(u) && !gone(u, now)).then_some(i)
}

fn get_user(st: &State, r: &Req, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let sel = match parse_select(&t, r, v) {
        Ok(s) => s,
        Err(e) => return bad_request(&e, ids),
    };
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(context(st, v, "users", &sel, true)),
    );
    m.extend(render_user(&t, i, &sel));
    Reply::json(200, Value::Object(m))
}

fn context(st: &State, v: &str, set: &str, sel: &Selection, entity: bool) -> String {
    let mut s = format!("{}/{v}/$metadata#{set}", st.base_url);
    if sel.explicit {
        s.push('(');
        s.push_str(&sel.props.join(","));
        s.push(')');
    }
    if entity {
        s.push_str("/$entity");
    }
    s
}

/// What a paged listing walks over.
#[derive(Clone, Copy)]
enum Listing {
    Users,
    Deleted,
    Group {
        g: usize,
        transitive: bool,
        users_only: bool,
    },
}

/// `GET /users/$count`: an advanced query (needs `ConsistencyLevel: eventual`),
/// refused in B2C; answers the number as text.
fn count_users(st: &State, r: &Req, ids: &RequestIds) -> Reply {
    let now = st.now();
    let t = st.tenant_read();
    if t.kind == TenantKind::B2c {
        return graph_error(
            400,
            "Request_UnsupportedQuery",
            "The $count segment is not supported in Azure AD B2C tenants.",
            ids,
        );
    }
    if !r
        .header("consistencylevel")
        .is_some_and(|h| h.eq_ignore_ascii_case("eventual"))
    {
        return graph_error(
            400,
            "Request_BadRequest",
            "$count is not currently supported without the ConsistencyLevel: eventual header.",
            ids,
        );
    }
    let n = t.users.iter().filter(|u| live(u) && !gone(u, now)).count();
    Reply::raw(200, n.to_string(), "text/plain")
}

fn list_users(st: &State, r: &Req, ids: &RequestIds, v: &str) -> (Reply, usize) {
    list_paged(st, r, ids, v, Listing::Users)
}

/// Skiptoken payload: next position, issue time and the query it belongs to.
fn make_skiptoken(st: &State, pos: u32, now: i64, qhash: u64) -> String {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(b"RFNw");
    b.extend_from_slice(&pos.to_be_bytes());
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&qhash.to_be_bytes());
    let mac = ids::hash(&[st.skip_key, u64::from(pos), now as u64, qhash]);
    b.extend_from_slice(&mac.to_be_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

enum TokenState {
    Valid(u32),
    Invalid,
    Expired,
}

fn read_skiptoken(st: &State, tok: &str, qhash: u64, now: i64) -> TokenState {
    let Ok(b) = URL_SAFE_NO_PAD.decode(tok.trim()) else {
        return TokenState::Invalid;
    };
    if b.len() != 32 || &b[0..4] != b"RFNw" {
        return TokenState::Invalid;
    }
    let pos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[8..16]);
    let issued = i64::from_be_bytes(x);
    x.copy_from_slice(&b[16..24]);
    let q = u64::from_be_bytes(x);
    x.copy_from_slice(&b[24..32]);
    let mac = u64::from_be_bytes(x);
    if mac != ids::hash(&[st.skip_key, u64::from(pos), issued as u64, q]) || q != qhash {
        return TokenState::Invalid;
    }
    if now - issued > st.skiptoken_ttl_secs {
        return TokenState::Expired;
    }
    TokenState::Valid(pos)
}

fn list_paged(st: &State, r: &Req, ids: &RequestIds, v: &str, listing: Listing) -> (Reply, usize) {
    let now = st.now();
    let t = st.tenant_read();
    let b2c = t.kind == TenantKind::B2c;
    let eventual = r
        .header("consistencylevel")
        .is_some_and(|h| h.eq_ignore_ascii_case("eventual"));
    let count = r
        .query_value("$count")
        .map(|c| c.eq_ignore_ascii_case("true"));
    if count.is_some() {
        if b2c {
            return (
                graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    "The $count query parameter is not supported in Azure AD B2C tenants.",
                    ids,
                ),
                0,
            );
        }
        if !eventual {
            return (
                graph_error(
                    400,
                    "Request_BadRequest",
                    "$count is not currently supported without the ConsistencyLevel: eventual header.",
                    ids,
                ),
                0,
            );
        }
    }
    if r.query_value("$search").is_some() {
        if b2c {
            return (
                graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    "The $search query parameter is not supported in Azure AD B2C tenants.",
                    ids,
                ),
                0,
            );
        }
        return (
            graph_error(
                400,
                "Request_UnsupportedQuery",
                "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'.",
                ids,
            ),
            0,
        );
    }
    if r.query_value("$orderby").is_some() {
        return (
            graph_error(
                400,
                "Request_UnsupportedQuery",
                "Sorting not supported for current query.",
                ids,
            ),
            0,
        );
    }
    let advanced = eventual && count == Some(true);
    let filter: Option<Filter> = match r.query_value("$filter") {
        None => None,
        Some(f) if matches!(listing, Listing::Users) => match odata::parse_filter(f)
            .and_then(|p| odata::validate(&p, t.kind, advanced).map(|_| p))
        {
            Ok(p) => Some(p),
            Err((status, code, msg)) => return (graph_error(status, code, &msg, ids), 0),
        },
        Some(_) => {
            return (
                graph_error(400, "Request_UnsupportedQuery", "Unsupported query.", ids),
                0,
            );
        }
    };
    let sel = match parse_select(&t, r, v) {
        Ok(s) => s,
        Err(e) => return (bad_request(&e, ids), 0),
    };
    let expand = match parse_expand(r) {
        Ok(e) if e.is_none() || matches!(listing, Listing::Users) => e,
        Ok(_) => {
            return (
                bad_request("$expand is not supported on this collection.", ids),
                0,
            );
        }
        Err(e) => return (bad_request(&e, ids), 0),
    };
    let top = match r.query_value("$top") {
        None => 100,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return (
                    bad_request(
                        &format!(
                            "Invalid page size specified: '{s}'. Must be between 1 and 999 inclusive."
                        ),
                        ids,
                    ),
                    0,
                );
            }
        },
    };
    // With signInActivity selected, Graph returns at most 120 users per page whatever $top says.
    let page = if sel.has("signInActivity") {
        top.min(120)
    } else {
        top
    } as usize;

    let path = r.path.clone();
    let mut qparts: Vec<(String, String)> = r
        .query
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .cloned()
        .collect();
    qparts.sort();
    let qhash = ids::hash_str(&format!("{path}?{qparts:?}"));
    let start = match r.query_value("$skiptoken") {
        None => 0,
        Some(tok) => match read_skiptoken(st, tok, qhash, now) {
            TokenState::Valid(p) => p,
            TokenState::Expired => {
                return (
                    graph_error(
                        400,
                        "Directory_ExpiredPageToken",
                        "The specified page token value has expired and can no longer be included in your request.",
                        ids,
                    ),
                    0,
                );
            }
            TokenState::Invalid => {
                return (
                    graph_error(
                        400,
                        "Request_BadRequest",
                        "The specified page token value is invalid or was issued for a different query.",
                        ids,
                    ),
                    0,
                );
            }
        },
    };

    let nested: &[usize] = match listing {
        Listing::Group {
            g,
            transitive: true,
            users_only: false,
        } => Tenant::nested_groups(g),
        _ => &[],
    };
    let total = nested.len() + t.users.len();
    let user_ok = |i: u32| -> bool {
        let u = &t.users[i as usize];
        let base = match listing {
            Listing::Users => live(u) && !gone(u, now),
            Listing::Deleted => in_recycle_bin(u, now),
            Listing::Group { g, transitive, .. } => {
                let direct = t.in_group(g, i);
                direct || (transitive && Tenant::nested_groups(g).iter().any(|n| t.in_group(*n, i)))
            }
        };
        base && filter.as_ref().is_none_or(|f| odata::matches(&t, i, f))
    };
    let mut values = Vec::with_capacity(page);
    let mut pos = start as usize;
    while pos < total && values.len() < page {
        if pos < nested.len() {
            let g = nested[pos];
            values.push(json!({"@odata.type": "#microsoft.graph.group", "id": t.group_id(g), "displayName": GROUPS[g], "securityEnabled": true, "mailEnabled": false}));
        } else {
            let i = (pos - nested.len()) as u32;
            if user_ok(i) {
                let mut m = Map::new();
                if !matches!(listing, Listing::Users) {
                    m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
                }
                m.extend(render_user(&t, i, &sel));
                expand_manager(&t, i, &expand, &mut m);
                if matches!(listing, Listing::Deleted) && !m.contains_key("deletedDateTime") {
                    m.insert(
                        "deletedDateTime".into(),
                        json!(opt_iso(t.users[i as usize].deleted_at)),
                    );
                }
                values.push(Value::Object(m));
            }
        }
        pos += 1;
    }
    // Graph may hand out a last link that yields an empty page; we look ahead instead.
    while pos < total && pos >= nested.len() && !user_ok((pos - nested.len()) as u32) {
        pos += 1;
    }
    let set = match listing {
        Listing::Users => "users",
        Listing::Deleted => "directory/deletedItems/microsoft.graph.user",
        Listing::Group { .. } => "directoryObjects",
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(st, v, set, &sel, false)),
    );
    if count == Some(true) {
        let n = (0..t.users.len() as u32).filter(|i| user_ok(*i)).count() + nested.len();
        body.insert("@odata.count".into(), json!(n));
    }
    if pos < total {
        let tok = make_skiptoken(st, pos as u32, now, qhash);
        let mut link = format!("{}{}?", st.base_url, path);
        for (k, val) in &r.query {
            if k.eq_ignore_ascii_case("$skiptoken") {
                continue;
            }
            link.push_str(k);
            link.push('=');
            link.push_str(&utf8_percent_encode(val, QUERY_VALUE).to_string());
            link.push('&');
        }
        link.push_str("$skiptoken=");
        link.push_str(&tok);
        body.insert("@odata.nextLink".into(), json!(link));
    }
    let n = values.len();
    body.insert("value".into(), Value::Array(values));
    (Reply::json(200, Value::Object(body)), n)
}

const PATCHABLE: [&str; 8] = [
    "accountEnabled",
    "displayName",
    "jobTitle",
    "department",
    "usageLocation",
    "mobilePhone",
    "officeLocation",
    "companyName",
];

fn patch_user(st: &State, r: &Req, ids: &RequestIds, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let Some(Value::Object(body)) = r.json_body() else {
        return graph_error(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
            ids,
        );
    };
    for (k, val) in &body {
        if !PATCHABLE.iter().any(|p| p == k) {
            return bad_request(
                &format!(
                    "Property '{k}' is read-only or not supported by the simulator and cannot be set."
                ),
                ids,
            );
        }
        if k == "accountEnabled" && !val.is_boolean() {
            return bad_request(
                "Invalid value specified for property 'accountEnabled' of resource 'User'.",
                ids,
            );
        }
    }
    let mut t = st.tenant_write();
    // Synced users are mastered on-premises: only cloud-only properties
    // (usageLocation) can be changed through Graph.
    if t.users[i as usize].flags & F_SYNCED != 0 && body.keys().any(|k| k != "usageLocation") {
        return synced_refusal(ids);
    }
    // Sensitive actions on privileged users (accountEnabled) need a higher
    // directory role than an app with User.ReadWrite.All holds.
    if t.users[i as usize].active_role() && body.contains_key("accountEnabled") {
        return insufficient_privileges(ids);
    }
    if let Some(enabled) = body.get("accountEnabled").and_then(Value::as_bool) {
        let u = &mut t.users[i as usize];
        let was = u.enabled();
        if enabled {
            u.flags |= F_ENABLED;
        } else {
            u.flags &= !F_ENABLED;
        }
        if was != enabled {
            let activity = if enabled {
                "Enable account"
            } else {
                "Disable account"
            };
            t.push_audit(
                now,
                activity,
                i,
                None,
                "AccountEnabled",
                if enabled { "[true]" } else { "[false]" },
            );
        }
    }
    t.push_audit(
        now,
        "Update user",
        i,
        None,
        "Included Updated Properties",
        &body.keys().cloned().collect::<Vec<_>>().join(","),
    );
    Reply::empty(204)
}

/// Graph's 403 for an app that may not touch privileged users.
fn insufficient_privileges(ids: &RequestIds) -> Reply {
    graph_error(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
        ids,
    )
}

/// Graph's refusal to change an object mastered by on-premises AD (Entra Connect sync).
fn synced_refusal(ids: &RequestIds) -> Reply {
    bad_request(
        "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        ids,
    )
}

fn delete_user(st: &State, ids: &RequestIds, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let mut t = st.tenant_write();
    if t.users[i as usize].flags & F_SYNCED != 0 {
        return synced_refusal(ids);
    }
    if t.users[i as usize].active_role() {
        return insufficient_privileges(ids);
    }
    t.users[i as usize].deleted_at = now;
    t.push_audit(now, "Delete user", i, None, "", "");
    Reply::empty(204)
}

fn revoke(st: &State, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    st.tenant_write().push_audit(
        now,
        "Invalidate all refresh tokens for user",
        i,
        None,
        "StsRefreshTokensValidFrom",
        &iso(now),
    );
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#Edm.Boolean", st.base_url), "value": true}),
    )
}

fn sku_bit(id: &str) -> Option<u8> {
    SKUS.iter()
        .position(|s| s.id.eq_ignore_ascii_case(id))
        .map(|b| 1u8 << b)
}

/// `assignLicense`: group-inherited licenses cannot be removed directly.
fn assign_license(st: &State, r: &Req, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let Some(body) = r.json_body() else {
        return graph_error(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
            ids,
        );
    };
    let (Some(add), Some(remove)) = (
        body["addLicenses"].as_array(),
        body["removeLicenses"].as_array(),
    ) else {
        return bad_request(
            "Invalid license assignment request: both addLicenses and removeLicenses are required.",
            ids,
        );
    };
    let mut add_bits = 0u8;
    for a in add {
        let id = a["skuId"].as_str().unwrap_or("");
        if st
            .lock(&st.exhausted_skus)
            .contains(&id.to_ascii_lowercase())
        {
            return graph_error(
                400,
                "Request_BadRequest",
                &format!("Subscription {id} does not have any available licenses."),
                ids,
            );
        }
        match sku_bit(id) {
            Some(b) => add_bits |= b,
            None => {
                return bad_request(
                    &format!("License {id} does not correspond to a valid company License."),
                    ids,
                );
            }
        }
    }
    let mut remove_bits = 0u8;
    let mut t = st.tenant_write();
    let u = &t.users[i as usize];
    for rm in remove {
        let id = rm.as_str().unwrap_or("");
        let Some(b) = sku_bit(id) else {
            return bad_request(
                &format!("License {id} does not correspond to a valid company License."),
                ids,
            );
        };
        if u.licenses & b == 0 {
            if u.group_licenses & b != 0 {
                return bad_request(
                    "User license is inherited from a group membership and it cannot be removed directly from the user.",
                    ids,
                );
            }
            return bad_request("User does not have a corresponding license.", ids);
        }
        remove_bits |= b;
    }
    let u = &mut t.users[i as usize];
    u.licenses = (u.licenses | add_bits) & !remove_bits;
    t.push_audit(now, "Change user license", i, None, "AssignedLicense", "");
    let sel = Selection {
        props: V1_DEFAULT.iter().map(|s| s.to_string()).collect(),
        explicit: false,
    };
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(format!("{}/{v}/$metadata#users/$entity", st.base_url)),
    );
    m.extend(render_user(&t, i, &sel));
    Reply::json(200, Value::Object(m))
}

fn manager(st: &State, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let Some(m) = t.manager_of(i) else {
        return not_found("manager", ids);
    };
    user_entity(st, &t, m, v)
}

/// `GET /users/{id}/sponsors` (v1.0): the guest's sponsors (users here).
fn sponsors(st: &State, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let sel = Selection {
        props: V1_DEFAULT.iter().map(|s| s.to_string()).collect(),
        explicit: false,
    };
    let values: Vec<Value> = t
        .sponsor_of(i)
        .into_iter()
        .map(|s| {
            let mut o = Map::new();
            o.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            o.extend(render_user(&t, s, &sel));
            Value::Object(o)
        })
        .collect();
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#directoryObjects", st.base_url), "value": values}),
    )
}

/// `GET /users/{id}/appRoleAssignments` (v1.0): the apps a user was
/// assigned to. Two of three users hold one to the tenant's expenses app;
/// the assignment belongs to the object, so a redemption reset keeps it.
fn app_role_assignments(st: &State, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let u = &t.users[i as usize];
    let principal = t.user_id(i);
    let holds = !crate::sim::ids::mix64(u64::from(u.name_key) ^ 0xa55).is_multiple_of(3);
    let values: Vec<Value> = holds
        .then(|| {
            json!({
                "id": crate::sim::ids::named_guid(t.seed, &format!("assignment-{i}")),
                "appRoleId": crate::sim::ids::named_guid(t.seed, "expenses-submitter"),
                "principalId": principal,
                "principalType": "User",
                "principalDisplayName": t.display_name(i),
                "resourceId": crate::sim::ids::named_guid(t.seed, "expenses-sp"),
                "resourceDisplayName": "Contoso Expenses",
                "createdDateTime": chrono::DateTime::from_timestamp(u.created, 0)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "deletedDateTime": null,
            })
        })
        .into_iter()
        .collect();
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#users('{principal}')/appRoleAssignments", st.base_url), "value": values}),
    )
}

fn no_mailbox(ids: &RequestIds) -> Reply {
    graph_error(
        404,
        "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ids,
    )
}

fn mailbox_settings(st: &State, ids: &RequestIds, v: &str, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let u = &t.users[i as usize];
    if !u.has_mailbox() {
        return no_mailbox(ids);
    }
    Reply::json(
        200,
        json!({
            "@odata.context": format!("{}/{v}/$metadata#users('{}')/mailboxSettings", st.base_url, t.user_id(i)),
            "archiveFolder": "AAMkAGI2",
            "timeZone": "UTC",
            "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
            "dateFormat": "yyyy-MM-dd",
            "timeFormat": "HH:mm",
            "userPurpose": PURPOSES[u.purpose as usize],
            "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all", "internalReplyMessage": "", "externalReplyMessage": ""},
            "language": {"locale": "en-US", "displayName": "English (United States)"},
            "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"], "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000", "timeZone": {"name": "UTC"}},
        }),
    )
}

fn send_mail(st: &State, r: &Req, ids: &RequestIds, key: &str) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let from = {
        let t = st.tenant_read();
        if !t.users[i as usize].has_mailbox() {
            return no_mailbox(ids);
        }
        t.mail(i).unwrap_or_else(|| t.upn(i))
    };
    let Some(body) = r.json_body() else {
        return graph_error(
            400,
            "ErrorInvalidRequest",
            "Cannot read the request body.",
            ids,
        );
    };
    let msg = &body["message"];
    if !msg.is_object() {
        return graph_error(
            400,
            "ErrorInvalidRequest",
            "The message parameter is required.",
            ids,
        );
    }
    let to: Vec<String> = msg["toRecipients"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["emailAddress"]["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if to.is_empty() {
        return graph_error(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
            ids,
        );
    }
    st.lock(&st.mail).push(CapturedMail {
        from,
        to,
        subject: msg["subject"].as_str().unwrap_or("").to_string(),
        body: msg["body"]["content"].as_str().unwrap_or("").to_string(),
        content_type: msg["body"]["contentType"]
            .as_str()
            .unwrap_or("text")
            .to_string(),
        sent_at: iso(now),
    });
    Reply::empty(202)
}

fn group_json(t: &Tenant, g: usize) -> Value {
    json!({"@odata.type": "#microsoft.graph.group", "id": t.group_id(g), "displayName": GROUPS[g], "securityEnabled": true, "mailEnabled": false, "groupTypes": [], "description": null})
}

fn role_json(st: &State, role: u8) -> Value {
    let (template, name) = ROLES[role as usize - 1];
    let seed = st.tenant_read().seed;
    json!({"@odata.type": "#microsoft.graph.directoryRole", "id": ids::named_guid(seed, name), "displayName": name, "description": null, "roleTemplateId": template})
}

fn member_of(
    st: &State,
    ids: &RequestIds,
    v: &str,
    key: &str,
    transitive: bool,
    cast: Option<&str>,
) -> Reply {
    let now = st.now();
    let Some(i) = lookup(st, key, now) else {
        return not_found(key, ids);
    };
    let t = st.tenant_read();
    let mut values = Vec::new();
    let want_groups = cast.is_none() || cast == Some("microsoft.graph.group");
    let want_roles = cast.is_none() || cast == Some("microsoft.graph.directoryRole");
    if cast.is_some() && !want_groups && !want_roles {
        return graph_error(
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                cast.unwrap_or("")
            ),
            ids,
        );
    }
    if want_groups {
        for g in 0..GROUPS.len() {
            let direct = t.in_group(g, i);
            let via = transitive && Tenant::nested_groups(g).iter().any(|n| t.in_group(*n, i));
            if direct || via {
                values.push(group_json(&t, g));
            }
        }
    }
    let role = t.users[i as usize].role;
    let active = t.users[i as usize].active_role();
    drop(t);
    if want_roles && active {
        values.push(role_json(st, role));
    }
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#directoryObjects", st.base_url), "value": values}),
    )
}

fn subscribed_skus(st: &State, v: &str) -> Reply {
    let t = st.tenant_read();
    let mut consumed = [0u64; 6];
    for u in t.users.iter().filter(|u| live(u)) {
        for (b, c) in consumed.iter_mut().enumerate() {
            if u.all_licenses() & (1 << b) != 0 {
                *c += 1;
            }
        }
    }
    let plans = |office: bool| -> Value {
        if office {
            json!([
                {"servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0", "servicePlanName": "EXCHANGE_S_ENTERPRISE", "provisioningStatus": "Success", "appliesTo": "User"},
                {"servicePlanId": "5dbe027f-2339-4123-9542-606e4d348a72", "servicePlanName": "SHAREPOINTENTERPRISE", "provisioningStatus": "Success", "appliesTo": "User"},
                {"servicePlanId": "57ff2da0-773e-42df-b2af-ffb7a2317929", "servicePlanName": "TEAMS1", "provisioningStatus": "Success", "appliesTo": "User"},
            ])
        } else {
            json!([])
        }
    };
    let value: Vec<Value> = SKUS.iter().zip(consumed).map(|(s, c)| json!({
        "accountName": t.domain.split('.').next().unwrap_or(""),
        "accountId": t.tenant_id,
        "appliesTo": "User",
        "capabilityStatus": "Enabled",
        "consumedUnits": c,
        "id": format!("{}_{}", t.tenant_id, s.id),
        "prepaidUnits": {"enabled": s.prepaid, "suspended": 0, "warning": 0, "lockedOut": 0},
        "servicePlans": plans(s.office),
        "skuId": s.id,
        "skuPartNumber": s.part,
        "subscriptionIds": [ids::named_guid(t.seed, s.part)],
    })).collect();
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#subscribedSkus", st.base_url), "value": value}),
    )
}

fn list_groups(st: &State, v: &str) -> Reply {
    let t = st.tenant_read();
    let value: Vec<Value> = (0..GROUPS.len()).map(|g| group_json(&t, g)).collect();
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#groups", st.base_url), "value": value}),
    )
}

fn get_group(st: &State, ids: &RequestIds, v: &str, id: &str) -> Reply {
    let t = st.tenant_read();
    let Some(g) = t.group_index(id) else {
        return not_found(id, ids);
    };
    let mut o = group_json(&t, g);
    o["@odata.context"] = json!(format!("{}/{v}/$metadata#groups/$entity", st.base_url));
    Reply::json(200, o)
}

fn quoted_after(filter: &str, prop: &str) -> Option<String> {
    let lower = filter.to_ascii_lowercase();
    let at = lower.find(&format!("{} eq '", prop.to_ascii_lowercase()))?;
    let rest = &filter[at + prop.len() + 5..];
    Some(rest.split('\'').next()?.to_string())
}

/// Active role assignments, or (`eligible`) PIM eligibility instances of
/// the same shape (`unifiedRoleEligibilityScheduleInstance`).
fn role_assignments(st: &State, r: &Req, ids: &RequestIds, v: &str, eligible: bool) -> Reply {
    let filter = r.query_value("$filter").unwrap_or("");
    let principal = quoted_after(filter, "principalId");
    let definition = quoted_after(filter, "roleDefinitionId");
    if !filter.is_empty() && principal.is_none() && definition.is_none() {
        return graph_error(
            400,
            "BadRequest",
            "Invalid filter clause: only principalId eq and roleDefinitionId eq are supported.",
            ids,
        );
    }
    let now = st.now();
    let t = st.tenant_read();
    let candidates: Vec<u32> = match &principal {
        Some(p) => t.resolve(p).into_iter().collect(),
        None => (0..t.users.len() as u32).collect(),
    };
    let expand = r
        .query_value("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("roleDefinition"));
    let mut value = Vec::new();
    for i in candidates {
        let u = &t.users[i as usize];
        if u.role == 0 || !live(u) || gone(u, now) || u.active_role() == eligible {
            continue;
        }
        let (template, name) = ROLES[u.role as usize - 1];
        if definition
            .as_deref()
            .is_some_and(|d| !d.eq_ignore_ascii_case(template))
        {
            continue;
        }
        let mut a = json!({
            "id": ids::named_guid(t.seed, &format!("{}-{i}", if eligible { "re" } else { "ra" })),
            "principalId": t.user_id(i),
            "roleDefinitionId": template,
            "directoryScopeId": "/",
        });
        if eligible {
            a["memberType"] = json!("Direct");
            a["startDateTime"] = json!(iso(u.created));
            a["endDateTime"] = Value::Null;
        }
        if expand {
            a["roleDefinition"] = json!({"id": template, "displayName": name, "templateId": template, "isBuiltIn": true, "isEnabled": true});
        }
        value.push(a);
    }
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#roleManagement/directory/{}", st.base_url, if eligible { "roleEligibilityScheduleInstances" } else { "roleAssignments" }), "value": value}),
    )
}

fn role_definitions(v: &str, st: &State) -> Reply {
    let value: Vec<Value> = ROLES.iter().map(|(id, name)| json!({"id": id, "displayName": name, "templateId": id, "isBuiltIn": true, "isEnabled": true})).collect();
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#roleManagement/directory/roleDefinitions", st.base_url), "value": value}),
    )
}

fn deleted_index(st: &State, id: &str, now: i64) -> Option<u32> {
    let t = st.tenant_read();
    let i = ids::index_of_guid(t.id_key, id)?;
    let u = t.users.get(i as usize)?;
    in_recycle_bin(u, now).then_some(i)
}

fn get_deleted(st: &State, r: &Req, ids: &RequestIds, v: &str, id: &str) -> Reply {
    let now = st.now();
    let Some(i) = deleted_index(st, id, now) else {
        return not_found(id, ids);
    };
    let t = st.tenant_read();
    let sel = match parse_select(&t, r, v) {
        Ok(s) => s,
        Err(e) => return bad_request(&e, ids),
    };
    let mut m = Map::new();
    m.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/{v}/$metadata#directoryObjects/$entity",
            st.base_url
        )),
    );
    m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    m.extend(render_user(&t, i, &sel));
    m.insert(
        "deletedDateTime".into(),
        json!(opt_iso(t.users[i as usize].deleted_at)),
    );
    Reply::json(200, Value::Object(m))
}

fn purge_deleted(st: &State, ids: &RequestIds, id: &str) -> Reply {
    let now = st.now();
    let Some(i) = deleted_index(st, id, now) else {
        return not_found(id, ids);
    };
    let mut t = st.tenant_write();
    t.users[i as usize].flags |= F_PURGED;
    t.push_audit(now, "Hard Delete user", i, None, "", "");
    Reply::empty(204)
}

/// Restore brings the user back with licenses and groups (they were kept).
fn restore_deleted(st: &State, ids: &RequestIds, v: &str, id: &str) -> Reply {
    let now = st.now();
    let Some(i) = deleted_index(st, id, now) else {
        return not_found(id, ids);
    };
    let mut t = st.tenant_write();
    t.users[i as usize].deleted_at = 0;
    t.push_audit(now, "Restore user", i, None, "", "");
    user_entity(st, &t, i, v)
}

/// A user as a `directoryObject` entity with Graph's default properties
/// (what `GET /users/{id}/manager` and a deleted-item restore answer).
fn user_entity(st: &State, t: &Tenant, i: u32, v: &str) -> Reply {
    let sel = Selection {
        props: V1_DEFAULT.iter().map(|s| s.to_string()).collect(),
        explicit: false,
    };
    let mut o = Map::new();
    o.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/{v}/$metadata#directoryObjects/$entity",
            st.base_url
        )),
    );
    o.insert("@odata.type".into(), json!("#microsoft.graph.user"));
    o.extend(render_user(t, i, &sel));
    Reply::json(200, Value::Object(o))
}

fn patch_report_settings(st: &State, r: &Req, ids: &RequestIds) -> Reply {
    match r
        .json_body()
        .and_then(|b| b.get("displayConcealedNames").and_then(Value::as_bool))
    {
        Some(v) => {
            st.concealed.store(v, Ordering::SeqCst);
            Reply::empty(204)
        }
        None => graph_error(
            400,
            "BadRequest",
            "Invalid request body: displayConcealedNames (boolean) expected.",
            ids,
        ),
    }
}

/// `POST /invitations`; `resetRedemption` keeps the object id; app-only calls
/// cannot reset users that hold directory roles.
fn invite(st: &State, r: &Req, ids: &RequestIds, v: &str) -> Reply {
    let now = st.now();
    let Some(body) = r.json_body() else {
        return graph_error(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
            ids,
        );
    };
    let Some(email) = body["invitedUserEmailAddress"]
        .as_str()
        .filter(|e| e.contains('@'))
    else {
        return graph_error(
            400,
            "BadRequest",
            "The invited user email address is invalid.",
            ids,
        );
    };
    let Some(redirect) = body["inviteRedirectUrl"].as_str() else {
        return graph_error(
            400,
            "BadRequest",
            "The invite redirect URL is required.",
            ids,
        );
    };
    let reset = body["resetRedemption"].as_bool().unwrap_or(false);
    let send = body["sendInvitationMessage"].as_bool().unwrap_or(false);
    let mut t = st.tenant_write();
    let i = if reset {
        let Some(uid) = body["invitedUser"]["id"].as_str() else {
            return graph_error(
                400,
                "BadRequest",
                "invitedUser.id is required when resetRedemption is true.",
                ids,
            );
        };
        let Some(i) = t.resolve(uid).filter(|i| live(&t.users[*i as usize])) else {
            return not_found(uid, ids);
        };
        let u = &t.users[i as usize];
        if !u.arch.is_guest() {
            return graph_error(
                400,
                "BadRequest",
                "Redemption can only be reset for external users.",
                ids,
            );
        }
        if u.role > 0 {
            return graph_error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
                ids,
            );
        }
        let u = &mut t.users[i as usize];
        u.flags |= F_PENDING;
        u.state_changed = now;
        t.push_audit(
            now,
            "Reset user redemption status",
            i,
            None,
            "ExternalUserState",
            "[\"PendingAcceptance\"]",
        );
        i
    } else {
        let i = t.add_guest(email, now);
        t.push_audit(now, "Invite external user", i, None, "", "");
        i
    };
    Reply::json(
        201,
        json!({
            "@odata.context": format!("{}/{v}/$metadata#invitations/$entity", st.base_url),
            "id": uuid::Uuid::new_v4().to_string(),
            "inviteRedeemUrl": format!("{}/redeem?rd=https%3a%2f%2finvitations.microsoft.com%2fredeem%2f%3ftenant%3d{}", st.base_url, t.tenant_id),
            "invitedUserDisplayName": body["invitedUserDisplayName"],
            "invitedUserType": "Guest",
            "invitedUserEmailAddress": email,
            "sendInvitationMessage": send,
            "resetRedemption": reset,
            "inviteRedirectUrl": redirect,
            "status": "PendingAcceptance",
            "invitedUser": {"id": t.user_id(i)},
        }),
    )
}

/// `auditLogs/directoryAudits?$filter=targetResources/any(t:t/id eq '{id}')`.
fn directory_audits(st: &State, r: &Req, ids: &RequestIds, v: &str) -> Reply {
    let now = st.now();
    let filter = r.query_value("$filter").unwrap_or("");
    let mut target: Option<String> = None;
    let mut since: Option<i64> = None;
    let mut activity: Option<String> = None;
    for clause in filter.split(" and ") {
        let c = clause.trim();
        let cl: String = c
            .chars()
            .filter(|ch| !ch.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if c.is_empty() {
            continue;
        }
        if let Some(rest) = cl.strip_prefix("targetresources/any(t:t/ideq'") {
            target = rest.split('\'').next().map(str::to_string);
        } else if let Some(rest) = c.trim().strip_prefix("activityDisplayName eq ") {
            // Graph documents `activityDisplayName` among the filterable
            // properties of directoryAudits (eq, startswith).
            match rest
                .trim()
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
            {
                Some(name) => activity = Some(name.replace("''", "'")),
                None => return graph_error(400, "BadRequest", "Invalid filter clause.", ids),
            }
        } else if let Some(rest) = c.trim().strip_prefix("activityDateTime ge ") {
            match chrono::DateTime::parse_from_rfc3339(rest.trim()) {
                Ok(d) => since = Some(d.timestamp()),
                Err(_) => return graph_error(400, "BadRequest", "Invalid filter clause.", ids),
            }
        } else {
            return graph_error(
                400,
                "BadRequest",
                &format!("Invalid filter clause: '{c}' is not supported."),
                ids,
            );
        }
    }
    let t = st.tenant_read();
    let (client_id, retention) = (st.client_id.clone(), t.audit_retention_days());
    let target_idx = target.as_deref().map(|id| ids::index_of_guid(t.id_key, id));
    let mut value = Vec::new();
    for e in t.audits.iter().rev() {
        if now - e.at > retention * DAY || e.at > now {
            continue;
        }
        if target_idx.as_ref().is_some_and(|ti| *ti != Some(e.target)) {
            continue;
        }
        if since.is_some_and(|s| e.at < s) {
            continue;
        }
        if activity.as_deref().is_some_and(|a| a != e.activity) {
            continue;
        }
        let initiated = match e.by_person {
            Some(p) => {
                json!({"app": null, "user": {"id": t.user_id(p), "displayName": t.display_name(p), "userPrincipalName": t.upn(p), "ipAddress": "203.0.113.7", "userType": null, "homeTenantId": null, "homeTenantName": null}})
            }
            None => match &e.by_app {
                Some(app) => {
                    json!({"user": null, "app": {"appId": app, "displayName": "HR provisioning", "servicePrincipalId": ids::named_guid(t.seed, app), "servicePrincipalName": null}})
                }
                None => {
                    json!({"user": null, "app": {"appId": client_id, "displayName": "dormant", "servicePrincipalId": ids::named_guid(t.seed, "dormant-sp"), "servicePrincipalName": null}})
                }
            },
        };
        value.push(json!({
            "id": e.id,
            "category": "UserManagement",
            "correlationId": ids::named_guid(t.seed, &e.id),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": e.activity,
            "activityDateTime": iso(e.at),
            "loggedByService": "Core Directory",
            "operationType": if e.activity.starts_with("Delete") || e.activity.starts_with("Hard") { "Delete" } else if e.activity.starts_with("Invite") { "Add" } else { "Update" },
            "initiatedBy": initiated,
            "targetResources": [{
                "id": t.user_id(e.target),
                "displayName": null,
                "type": "User",
                "userPrincipalName": t.upn(e.target),
                "groupType": null,
                "modifiedProperties": if e.property.is_empty() { json!([]) } else { json!([{"displayName": e.property, "oldValue": null, "newValue": e.new_value}]) },
            }],
            "additionalDetails": [{"key": "UserType", "value": t.user_type(e.target)}],
        }));
    }
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{v}/$metadata#auditLogs/directoryAudits", st.base_url), "value": value}),
    )
}

fn organization(st: &State, r: &Req, ids: &RequestIds, v: &str, id: Option<&str>) -> Reply {
    let t = st.tenant_read();
    if id.is_some_and(|x| !x.eq_ignore_ascii_case(&t.tenant_id)) {
        return not_found(id.unwrap_or(""), ids);
    }
    let full = json!({
        "id": t.tenant_id,
        "displayName": t.domain.split('.').next().unwrap_or(""),
        "tenantType": if t.kind == TenantKind::B2c { "AAD B2C" } else { "AAD" },
        "verifiedDomains": [{"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": true, "isInitial": true, "name": t.domain, "type": "Managed"}],
        "directorySizeQuota": {"used": t.object_count(), "total": st.quota_total},
        "createdDateTime": iso(t.t0 - 3000 * DAY),
        "countryLetterCode": "US",
    });
    let shaped = match r.query_value("$select") {
        None => full,
        Some(sel) => {
            let mut m = Map::new();
            for p in sel.split(',').map(str::trim) {
                match full.get(p) {
                    Some(x) => {
                        m.insert(p.to_string(), x.clone());
                    }
                    None => {
                        return bad_request(
                            &format!(
                                "Parsing OData Select and Expand failed: Could not find a property named '{p}' on type 'microsoft.graph.organization'."
                            ),
                            ids,
                        );
                    }
                }
            }
            Value::Object(m)
        }
    };
    if id.is_some() {
        let mut o = shaped;
        o["@odata.context"] = json!(format!(
            "{}/{v}/$metadata#organization/$entity",
            st.base_url
        ));
        Reply::json(200, o)
    } else {
        Reply::json(
            200,
            json!({"@odata.context": format!("{}/{v}/$metadata#organization", st.base_url), "value": [shaped]}),
        )
    }
}

/// `POST /$batch`: at most 20 requests, each answered on its own (own status,
/// headers, body; a throttled item gets its own 429 and Retry-After).
fn batch(st: &State, r: &Req, ids: &RequestIds, version: &str) -> (Reply, usize) {
    let Some(body) = r.json_body() else {
        return (
            graph_error(400, "BadRequest", "Invalid batch payload format.", ids),
            0,
        );
    };
    let Some(reqs) = body["requests"].as_array() else {
        return (
            graph_error(400, "BadRequest", "Invalid batch payload format.", ids),
            0,
        );
    };
    if reqs.is_empty() {
        return (
            graph_error(400, "BadRequest", "Invalid batch payload format.", ids),
            0,
        );
    }
    if reqs.len() > 20 {
        return (
            graph_error(
                400,
                "BadRequest",
                "The number of requests in the batch exceeds the maximum allowed limit of 20.",
                ids,
            ),
            0,
        );
    }
    let mut seen = HashSet::new();
    for q in reqs {
        let id = q["id"].as_str().unwrap_or("");
        if id.is_empty() || q["method"].as_str().is_none() || q["url"].as_str().is_none() {
            return (
                graph_error(
                    400,
                    "BadRequest",
                    "Invalid batch payload format: each request needs id, method and url.",
                    ids,
                ),
                0,
            );
        }
        if !seen.insert(id.to_ascii_lowercase()) {
            return (
                graph_error(
                    400,
                    "BadRequest",
                    &format!("Batch request contains a duplicate id '{id}'."),
                    ids,
                ),
                0,
            );
        }
    }
    let mut statuses: std::collections::HashMap<String, u16> = Default::default();
    let mut responses = Vec::new();
    for q in reqs {
        let id = q["id"].as_str().unwrap_or("").to_string();
        let deps: Vec<String> = q["dependsOn"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if deps
            .iter()
            .any(|d| statuses.get(d).is_none_or(|s| *s >= 400))
        {
            statuses.insert(id.clone(), 424);
            responses.push(json!({"id": id, "status": 424, "headers": {}, "body": {"error": {"code": "FailedDependency", "message": "The request could not be completed because a request it depends on failed."}}}));
            continue;
        }
        let url = q["url"].as_str().unwrap_or("").trim_start_matches('/');
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let mut headers = r.headers.clone();
        headers.remove("content-length");
        if let Some(h) = q["headers"].as_object() {
            for (k, val) in h {
                if let (Ok(name), Some(Ok(value))) = (
                    hyper::header::HeaderName::from_bytes(k.as_bytes()),
                    val.as_str().map(hyper::header::HeaderValue::from_str),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        let item_body = match &q["body"] {
            Value::Null => bytes::Bytes::new(),
            b => bytes::Bytes::from(serde_json::to_vec(b).unwrap_or_default()),
        };
        let method = hyper::Method::from_bytes(
            q["method"]
                .as_str()
                .unwrap_or("GET")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .unwrap_or(hyper::Method::GET);
        let item = Req {
            method,
            path: format!(
                "/{version}/{}",
                percent_encoding::percent_decode_str(path).decode_utf8_lossy()
            ),
            query: url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
            headers,
            body: item_body,
        };
        let segs: Vec<&str> = item
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let item_ids = RequestIds {
            request_id: uuid::Uuid::new_v4().to_string(),
            ..ids.clone()
        };
        let (reply, _) = if segs.get(1) == Some(&"$batch") {
            (
                graph_error(
                    400,
                    "BadRequest",
                    "Nested batch requests are not supported.",
                    &item_ids,
                ),
                0,
            )
        } else {
            route(st, &item, &item_ids, version, &segs[1..])
        };
        statuses.insert(id.clone(), reply.status);
        let mut h = Map::new();
        let mut has_ctype = false;
        for (k, val) in &reply.headers {
            has_ctype |= k.eq_ignore_ascii_case("content-type");
            h.insert(k.clone(), json!(val));
        }
        let body = match reply.body {
            Body::Empty => None,
            Body::Json(v) => {
                if !has_ctype {
                    h.insert("Content-Type".into(), json!(super::http::GRAPH_JSON));
                }
                Some(v)
            }
            Body::Raw(b, c) => {
                h.insert("Content-Type".into(), json!(c));
                Some(json!(base64::engine::general_purpose::STANDARD.encode(&b)))
            }
        };
        let mut item = json!({"id": id, "status": reply.status, "headers": h});
        if let Some(b) = body {
            item["body"] = b;
        }
        responses.push(item);
    }
    let n = responses.len();
    (Reply::json(200, json!({"responses": responses})), n)
}

/// `GET /common/userrealm?user=…&api-version=2.1` (unauthenticated, per domain).
pub fn userrealm(st: &State, r: &Req) -> Reply {
    let user = r.query_value("user").unwrap_or("").to_string();
    let domain = user.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
    if let Ok(mut m) = st.stats.realm_lookups.lock() {
        *m.entry(domain.clone()).or_default() += 1;
    }
    let t = st.tenant_read();
    let known = t.is_viral_domain(&domain);
    let ours = domain == t.domain;
    let (ns, viral) = match known {
        Some(viral) => ("Managed", viral),
        None if ours => ("Managed", false),
        None => ("Unknown", false),
    };
    let mut body = json!({
        "ver": "1.0",
        "account_type": ns,
        "NameSpaceType": ns,
        "Login": user,
        "DomainName": domain,
        "FederationBrandName": domain.split('.').next().unwrap_or(""),
        "cloud_instance_name": "microsoftonline.com",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    });
    if known.is_some() || ours {
        body["IsViral"] = json!(viral);
    }
    Reply::json(200, body).with_header("content-type", "application/json; charset=utf-8")
}

/// Exchange Online admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` with
/// `Set-Mailbox -Type Shared|Regular` and `Get-Mailbox`. A user mailbox whose
/// licenses were already removed is gone, so the conversion fails: convert
/// before removing licenses.
pub fn exchange(st: &State, r: &Req, ids: &RequestIds) -> Reply {
    if let Some(reply) = graph_unauthorized(&check_token(st, r, Audience::Exchange), ids) {
        return reply;
    }
    let Some(body) = r.json_body() else {
        return graph_error(
            400,
            "BadRequest",
            "The request body is not valid JSON.",
            ids,
        );
    };
    let input = &body["CmdletInput"];
    let name = input["CmdletName"].as_str().unwrap_or("");
    let identity = input["Parameters"]["Identity"].as_str().unwrap_or("");
    let now = st.now();
    let ctx = format!(
        "{}/adminapi/beta/$metadata#Collection(Exchange.GenericHashTable)",
        st.base_url
    );
    let not_found_ex = || {
        graph_error(
            404,
            "NotFound",
            &format!(
                "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed because object '{identity}' couldn't be found on 'SIM01A001DC001.sim.prod.outlook.com'."
            ),
            ids,
        )
    };
    let Some(i) = lookup(st, identity, now) else {
        return not_found_ex();
    };
    match name {
        "Get-Mailbox" => {
            let t = st.tenant_read();
            let u = &t.users[i as usize];
            if !u.has_mailbox() {
                return not_found_ex();
            }
            let kind = match u.purpose {
                P_SHARED => "SharedMailbox",
                P_ROOM => "RoomMailbox",
                _ => "UserMailbox",
            };
            Reply::json(
                200,
                json!({"@odata.context": ctx, "value": [{"Identity": t.upn(i), "UserPrincipalName": t.upn(i), "ExternalDirectoryObjectId": t.user_id(i), "RecipientTypeDetails": kind, "PrimarySmtpAddress": t.mail(i)}]}),
            )
        }
        "Set-Mailbox" => {
            let ty = input["Parameters"]["Type"].as_str().unwrap_or("");
            let purpose = match ty {
                "Shared" => P_SHARED,
                "Regular" => P_USER,
                "Room" => P_ROOM,
                _ => {
                    return graph_error(
                        400,
                        "BadRequest",
                        &format!(
                            "Cannot process argument transformation on parameter 'Type'. Cannot convert value \"{ty}\"."
                        ),
                        ids,
                    );
                }
            };
            let mut t = st.tenant_write();
            if !t.users[i as usize].has_mailbox() {
                return not_found_ex();
            }
            t.users[i as usize].purpose = purpose;
            t.push_audit(now, "Set-Mailbox", i, None, "RecipientTypeDetails", ty);
            Reply::json(200, json!({"@odata.context": ctx, "value": []}))
        }
        other => graph_error(
            400,
            "BadRequest",
            &format!("The cmdlet '{other}' is not available in the simulator."),
            ids,
        ),
    }
}
