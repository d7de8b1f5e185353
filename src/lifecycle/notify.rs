//! The notify step: tell the manager (or the user) before anything changes.
//!
//! Two channels, either or both (CONTRACT `policy.notify`):
//! - mail through Graph `sendMail` from `mail_from` to the manager, else to
//!   the user's own address (workforce);
//! - a webhook: a JSON body of ids only, signed with HMAC-SHA256 into
//!   `X-Dormant-Signature: sha256=<hex>`, retried on 5xx, 429 and network
//!   failures. B2C users are notified this way (the application owns their
//!   contact details).
//!
//! Delivery is at least once: the webhook body carries an `idempotencyKey`
//! (`{case}:notify`) so a receiver can drop a repeat after a crash.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;

use super::attest::{self, Attestor, Links};
use super::case::Case;
use super::{ActionKind, LifecycleError};
use crate::config::{Config, TenantKind};
use crate::graph::{
    EmailAddress, GraphClient, GraphError, ItemBody, MailMessage, Recipient, User, UserType,
};

/// Attempts per webhook delivery.
const WEBHOOK_ATTEMPTS: u32 = 4;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(20);
pub const SIGNATURE_HEADER: &str = "X-Dormant-Signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn iso(t: Option<DateTime<Utc>>) -> serde_json::Value {
    t.map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(serde_json::Value::Null)
}

/// The "keep" / "let go" links of `case`'s notification, if links go out.
fn links_of(attest: Option<&Attestor>, case: &Case) -> Option<Links> {
    attest.and_then(|a| a.links(case))
}

/// The webhook's link fields (URLs only; the receiver shows them to the
/// user, who owns a B2C account).
fn add_links(body: &mut serde_json::Value, links: Option<&Links>) {
    if let (Some(links), Some(fields)) = (links, body.as_object_mut()) {
        fields.insert("keepUrl".into(), json!(links.keep_url));
        fields.insert("letGoUrl".into(), json!(links.let_go_url));
        fields.insert("linksExpireAt".into(), iso(Some(links.until)));
    }
}

/// The mail's paragraph with the links, empty without them.
fn links_paragraph(links: Option<&Links>) -> String {
    match links {
        Some(l) => format!(
            "If the account is still needed, keep it (no sign-in needed):\n{keep}\n\n\
             If it is no longer needed, let it go:\n{let_go}\n\n\
             The links work until {until}.\n\n",
            keep = l.keep_url,
            let_go = l.let_go_url,
            until = l.until.format("%Y-%m-%d"),
        ),
        None => String::new(),
    }
}

/// What the step did, as the audit detail (`mail-manager;webhook;links`, …).
pub async fn notify(
    graph: &GraphClient,
    http: &reqwest::Client,
    config: &Config,
    attest: Option<&Attestor>,
    case: &Case,
    user: &User,
    now: DateTime<Utc>,
) -> Result<String, LifecycleError> {
    let mut done = Vec::new();
    let notify = &config.policy.notify;
    let links = links_of(attest, case);
    if let (Some(url), Some(secret)) = (&notify.webhook, &notify.webhook_secret) {
        let mut body = json!({
            "v": 1,
            "event": "account-inactive",
            "idempotencyKey": format!("{}:notify", case.id),
            "tenant": config.tenant_id,
            "user": case.user,
            "case": case.id,
            "openedAt": iso(Some(case.opened_at)),
            "disableAt": iso(case.due_at(ActionKind::Disable)),
            "deleteAt": iso(case.due_at(ActionKind::Delete)),
        });
        add_links(&mut body, links.as_ref());
        let body = serde_json::to_vec(&body).expect("a JSON value serialises");
        post_webhook(http, url, secret, body).await?;
        done.push("webhook");
    }
    if config.tenant_kind == TenantKind::Workforce
        && let Some(from) = &notify.mail_from
    {
        let (to, who) = recipient(graph, user, from, now).await?;
        match to {
            Some(to) => {
                graph
                    .send_mail(from, &message(case, user, &to, links.as_ref()))
                    .await?;
                done.push(who);
            }
            None => done.push("mail-no-recipient"),
        }
    }
    if done.is_empty() {
        done.push("no-channel");
    } else if links.is_some() {
        done.push(attest::LINKS_DETAIL);
    }
    Ok(done.join(";"))
}

/// Who hears about the user, and the audit detail that says so. Members:
/// their manager, else themselves. Guests (their own address is outside
/// the tenant, and often stale): their sponsors, else whoever invited them,
/// else the governance mailbox dormant sends from.
async fn recipient(
    graph: &GraphClient,
    user: &User,
    mail_from: &str,
    now: DateTime<Utc>,
) -> Result<(Option<String>, &'static str), LifecycleError> {
    if user.user_type != Some(UserType::Guest) {
        let manager = graph.manager(&user.id).await?;
        return Ok(match manager.and_then(|m| m.mail) {
            Some(mail) => (Some(mail), "mail-manager"),
            None => (user.mail.clone(), "mail-user"),
        });
    }
    let sponsors: Vec<String> = graph
        .sponsors(&user.id)
        .await?
        .into_iter()
        .filter_map(|s| s.mail)
        .collect();
    if !sponsors.is_empty() {
        return Ok((Some(sponsors.join(";")), "mail-sponsor"));
    }
    if let Some(inviter) = graph.inviter_of(&user.id, now).await? {
        match graph.get_user(&inviter, &["id", "mail"]).await {
            Ok(u) if u.mail.is_some() => return Ok((u.mail, "mail-inviter")),
            Ok(_) | Err(GraphError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((Some(mail_from.to_owned()), "mail-governance"))
}

/// The mail to a manager or the user: who, since when, what happens when.
/// (The mail names the person; logs and the audit record never do.)
fn message(case: &Case, user: &User, to: &str, links: Option<&Links>) -> MailMessage {
    let name = user
        .display_name
        .clone()
        .or_else(|| user.user_principal_name.clone())
        .unwrap_or_else(|| user.id.clone());
    let upn = user.user_principal_name.clone().unwrap_or_default();
    let (subject, opening) = if case.in_plan(ActionKind::Disable).is_none() {
        // A pending invitation: nothing to disable, the invitation goes.
        (
            format!("Unaccepted invitation: {name} will be removed"),
            format!("The guest invitation for {name} ({upn}) has not been accepted."),
        )
    } else {
        (
            format!("Inactive account: {name} will be disabled"),
            format!("The account {name} ({upn}) has not been used for a long time."),
        )
    };
    let content = format!(
        "{opening}\n\n\
         Unless it is used again or an administrator excludes it, {happens}. \
         Signing in keeps the account.\n\n\
         {links}Reference: case {case_id}.",
        happens = attest::what_happens(case),
        links = links_paragraph(links),
        case_id = case.id,
    );
    MailMessage {
        subject,
        body: ItemBody {
            content_type: "text".into(),
            content,
        },
        // Several sponsors: one recipient each.
        to_recipients: to
            .split(';')
            .filter(|a| !a.is_empty())
            .map(|a| Recipient {
                email_address: EmailAddress {
                    address: a.to_owned(),
                },
            })
            .collect(),
    }
}

async fn post_webhook(
    http: &reqwest::Client,
    url: &url::Url,
    secret: &SecretString,
    body: Vec<u8>,
) -> Result<(), LifecycleError> {
    let sig = signature(secret, &body);
    let mut last = String::new();
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let sent = http
            .post(url.clone())
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &sig)
            .timeout(WEBHOOK_TIMEOUT)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                last = format!("webhook answered HTTP {}", r.status().as_u16());
            }
            Ok(r) => {
                return Err(LifecycleError::refused(
                    "webhook-refused",
                    format!(
                        "the notification webhook answered HTTP {}",
                        r.status().as_u16()
                    ),
                ));
            }
            // The error text names the URL only, never the body or secret.
            Err(e) => last = format!("webhook unreachable: {}", e.without_url()),
        }
    }
    Err(LifecycleError::Unavailable(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let secret = SecretString::from("Jefe");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
