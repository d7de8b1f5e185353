//! "Keep" links: attestation without an Entra ID Governance licence.
//!
//! Every notification carries two signed links, one per answer
//! ([`token`]). `GET` on a link shows a confirmation page (mail scanners
//! fetch links: a GET never changes anything); `POST` records the answer:
//! - `keep`: the case is cancelled (reason `kept`) and the user held
//!   (`HoldKind::Kept`) for `policy.attest.keep_days`;
//! - `let-go`: recorded; the case goes on unchanged.
//!
//! The answer is written into the case first (ETag-guarded: one answer per
//! case, a second POST finds it and changes nothing), then its `attest`
//! audit line is appended, then the case is marked recorded, then a keep
//! ends the case. Whoever finds the case next finishes what a crash left:
//! the nightly advance appends an unrecorded line and cancels a kept case,
//! and every re-check before a step cancels a kept case.

pub mod token;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

pub use token::{AttestKey, Claims, TokenError};

use super::case::{Case, CaseStatus, Place};
use super::ending::Ended;
use super::recheck::CancelReason;
use super::{ActionKind, Lifecycle, LifecycleError};
use crate::policy::phases::due_at;
use crate::store::audit::{AuditRecord, Outcome};

/// The audit step of an answer.
pub const STEP: &str = "attest";
/// Marks a notify step's detail when its notification carried links.
pub const LINKS_DETAIL: &str = "links";

/// What the owner answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    Keep,
    LetGo,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::LetGo => "let-go",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Keep => Self::LetGo,
            Self::LetGo => Self::Keep,
        }
    }
}

/// The answer as the case keeps it (its audit line travels with it until
/// the log holds it, like a step's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    pub answer: Answer,
    pub at: DateTime<Utc>,
    pub record: AuditRecord,
    #[serde(default)]
    pub recorded: bool,
}

/// Signs links: the key and the public address of the function app.
#[derive(Debug, Clone)]
pub struct Attestor {
    pub key: AttestKey,
    /// `DORMANT_PUBLIC_URL`; `None`: answers verify but no links go out.
    pub public_url: Option<Url>,
}

/// The two links of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub keep_url: String,
    pub let_go_url: String,
    /// Valid until then: the case's next destructive step.
    pub until: DateTime<Utc>,
}

impl Attestor {
    /// The token of `answer` for `case`, valid until its next destructive
    /// step; `None` when nothing destructive is left to answer for.
    pub fn token(&self, case: &Case, answer: Answer) -> Option<String> {
        let claims = Claims {
            case: case.id.clone(),
            user: crate::ids::ObjectId::parse(&case.user)?,
            answer,
            expires: case.attest_until()?,
        };
        self.key.sign(&claims)
    }

    /// Both links for `case`, or `None` (no public address, or nothing
    /// left to answer for).
    pub fn links(&self, case: &Case) -> Option<Links> {
        let base = self.public_url.as_ref()?;
        let url =
            |token: String| format!("{}/api/attest/{token}", base.as_str().trim_end_matches('/'));
        Some(Links {
            keep_url: url(self.token(case, Answer::Keep)?),
            let_go_url: url(self.token(case, Answer::LetGo)?),
            until: case.attest_until()?,
        })
    }

    /// The path of the sibling answer's link (the confirmation page offers
    /// both answers, whichever link was followed).
    pub fn path_for(&self, claims: &Claims, answer: Answer) -> Option<String> {
        let token = self.key.sign(&Claims {
            answer,
            ..claims.clone()
        })?;
        Some(format!("/api/attest/{token}"))
    }
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// What will happen to the account and when, from the case's plan: "the
/// account will be disabled on 2026-12-16 and deleted on 2027-01-22". The
/// same words in the mail, the webhook's reader and the confirmation page.
pub fn what_happens(case: &Case) -> String {
    let parts: Vec<String> = case
        .plan
        .iter()
        .filter(|p| !case.is_done(p.kind))
        .filter_map(|p| {
            let verb = match p.kind {
                ActionKind::Disable => "disabled",
                ActionKind::Delete => "deleted",
                ActionKind::Purge => "permanently deleted",
                _ => return None,
            };
            Some(format!("{verb} on {}", date(due_at(case.opened_at, p.day))))
        })
        .collect();
    match parts.as_slice() {
        [] => "nothing more will happen to the account".to_owned(),
        [one] => format!("the account will be {one}"),
        [init @ .., last] => format!("the account will be {} and {last}", init.join(", ")),
    }
}

impl Case {
    /// When its links expire: the next destructive step (disable or
    /// delete, whichever comes next in the plan and is not done).
    pub fn attest_until(&self) -> Option<DateTime<Utc>> {
        self.plan
            .iter()
            .filter(|p| matches!(p.kind, ActionKind::Disable | ActionKind::Delete))
            .find(|p| !self.is_done(p.kind))
            .map(|p| due_at(self.opened_at, p.day))
    }

    /// The owner answered "keep".
    pub fn kept(&self) -> bool {
        self.attestation
            .as_ref()
            .is_some_and(|a| a.answer == Answer::Keep)
    }

    /// The notification carried links (its step's detail says so).
    pub fn attestation_asked(&self) -> bool {
        self.step(ActionKind::Notify)
            .and_then(|s| s.record.as_ref())
            .and_then(|r| r.detail.as_deref())
            .is_some_and(|d| d.split(';').any(|p| p == LINKS_DETAIL))
    }
}

/// Why an answer changes nothing. Each is its own answer to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this link was answered already ({})", .0.as_str())]
    AlreadyAnswered(Answer),
    #[error("this case has ended")]
    Ended,
    /// The next destructive step began or is done: too late to keep.
    #[error("this link has expired")]
    TooLate,
}

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl From<crate::store::StoreError> for AttestError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Lifecycle(e.into())
    }
}

/// An answer recorded.
#[derive(Debug, Clone)]
pub struct Answered {
    pub answer: Answer,
    /// The case as it was answered (its plan says what happens next).
    pub case: Case,
    /// A keep holds the user until then.
    pub kept_until: Option<DateTime<Utc>>,
}

/// Whether `case` can still take an answer.
fn open_for_answers(case: &Case, place: Place) -> Result<(), Refusal> {
    if let Some(a) = &case.attestation {
        return Err(Refusal::AlreadyAnswered(a.answer));
    }
    if place == Place::Closed || case.status.is_final() || case.pending_end.is_some() {
        return Err(Refusal::Ended);
    }
    let destructive_started = case.plan.iter().any(|p| {
        p.kind != ActionKind::Notify
            && case
                .step(p.kind)
                .is_some_and(|s| s.started_at.is_some() || s.done_at.is_some())
    });
    if destructive_started || case.attest_until().is_none() {
        return Err(Refusal::TooLate);
    }
    Ok(())
}

impl Lifecycle<'_> {
    /// The case a verified link names, if it can still be answered (the
    /// confirmation page).
    pub async fn attest_case(&self, claims: &Claims) -> Result<Case, AttestError> {
        match self
            .cases()
            .find(claims.user.as_str(), &claims.case)
            .await?
        {
            None => Err(Refusal::Ended.into()),
            Some((case, _, place)) => {
                open_for_answers(&case, place)?;
                Ok(case)
            }
        }
    }

    /// Records the answer of a verified link (see the module doc for the
    /// order of writes).
    pub async fn answer(&self, claims: &Claims) -> Result<Answered, AttestError> {
        let cases = self.cases();
        let mut ours = false;
        for _ in 0..super::worker::MAX_ATTEMPTS {
            let Some((mut case, etag, place)) =
                cases.find(claims.user.as_str(), &claims.case).await?
            else {
                return Err(Refusal::Ended.into());
            };
            let Some(attestation) = case.attestation.clone() else {
                open_for_answers(&case, place)?;
                let now = self.clock.now();
                let mut record = self.record(&case, "", STEP, Outcome::Done);
                record.detail = Some(claims.answer.as_str().to_owned());
                case.attestation = Some(Attestation {
                    answer: claims.answer,
                    at: now,
                    record,
                    recorded: false,
                });
                case.updated_at = now;
                match cases.save(&case, &etag).await {
                    Ok(_) => ours = true,
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            };
            if !ours {
                return Err(Refusal::AlreadyAnswered(attestation.answer).into());
            }
            let mut etag = etag;
            if !attestation.recorded {
                self.ensure_recorded(&attestation.record).await?;
                if let Some(a) = case.attestation.as_mut() {
                    a.recorded = true;
                }
                etag = match cases.save_at(&case, &etag, place).await {
                    Ok(e) => e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                };
            }
            tracing::info!(case = %case.id, user = %case.user, answer = attestation.answer.as_str(), "attestation recorded");
            let kept_until = (attestation.answer == Answer::Keep).then(|| {
                crate::policy::Hold::kept(attestation.at, self.config.policy.attest.keep_days)
                    .until
                    .expect("a keep has an end")
            });
            if attestation.answer == Answer::Keep && !case.status.is_final() {
                let answered = case.clone();
                match self
                    .end_case(
                        case,
                        &etag,
                        CaseStatus::Cancelled,
                        "cancel",
                        Some(CancelReason::Kept.code()),
                        "",
                    )
                    .await?
                {
                    Ended::Conflict => continue,
                    Ended::Ended | Ended::Deferred => {
                        return Ok(Answered {
                            answer: attestation.answer,
                            case: answered,
                            kept_until,
                        });
                    }
                }
            }
            return Ok(Answered {
                answer: attestation.answer,
                case,
                kept_until,
            });
        }
        Err(LifecycleError::Contention(super::worker::MAX_ATTEMPTS).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Phases, TenantKind};
    use crate::ids::RunId;
    use crate::policy::{PlanShape, phases::plan};
    use secrecy::SecretString;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    }

    fn case() -> Case {
        let phases = Phases::default();
        let shape = PlanShape {
            subject: crate::policy::CaseSubject::Member,
            kind: TenantKind::Workforce,
            has_user_mailbox: false,
            has_direct_licenses: false,
        };
        let now = at("2026-12-02T02:00:00Z");
        Case::open(
            "6b3f2c1e-0000-4000-8000-000000000001",
            &RunId::new(now),
            &plan(shape, &phases),
            true,
            now,
        )
    }

    #[test]
    fn the_sentence_names_each_step_to_come_and_its_date() {
        let mut c = case();
        assert_eq!(
            what_happens(&c),
            "the account will be disabled on 2026-12-16 and deleted on 2027-01-22"
        );
        assert_eq!(c.attest_until(), Some(at("2026-12-16T02:00:00Z")));
        c.steps.entry(ActionKind::Disable).or_default().done_at = Some(at("2026-12-16T02:00:00Z"));
        assert_eq!(
            what_happens(&c),
            "the account will be deleted on 2027-01-22"
        );
        assert_eq!(c.attest_until(), Some(at("2027-01-22T02:00:00Z")));
    }

    #[test]
    fn links_are_signed_per_answer_and_need_a_public_address() {
        let key = AttestKey::new(SecretString::from("k".repeat(40))).expect("key");
        let c = case();
        let mut attestor = Attestor {
            key: key.clone(),
            public_url: None,
        };
        assert_eq!(attestor.links(&c), None, "no public URL, no links");
        attestor.public_url =
            Some(Url::parse("https://dormant-func.azurewebsites.net/").expect("url"));
        let links = attestor.links(&c).expect("links");
        let prefix = "https://dormant-func.azurewebsites.net/api/attest/";
        let keep = links.keep_url.strip_prefix(prefix).expect("keep link");
        let let_go = links.let_go_url.strip_prefix(prefix).expect("let-go link");
        let now = at("2026-12-03T09:00:00Z");
        assert_eq!(key.verify(keep, now).map(|c| c.answer), Ok(Answer::Keep));
        assert_eq!(key.verify(let_go, now).map(|c| c.answer), Ok(Answer::LetGo));
        assert_eq!(
            key.verify(keep, now).map(|c| c.expires),
            Ok(at("2026-12-16T02:00:00Z"))
        );
    }
}
