//! Scanning one partition: page its users, judge each, enrich only those
//! who are not plainly active (in `$batch`), stream their rows to a part
//! blob, and record the partition's result.
//!
//! A partition whose first page is full is split into its children instead
//! (it would be too slow to page alone); the children are scanned as their
//! own partitions. An expired skiptoken restarts the partition from scratch:
//! nothing of it was recorded yet, so nothing is lost or counted twice.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::context::RunContext;
use super::partition::Partition;
use crate::config::{Config, Mode, TenantKind, UnmanagedGuests};
use crate::graph::{BatchItem, GraphClient, GraphError, SCAN_SELECT, User, UserQuery, UserRecord};
use crate::lifecycle::{Candidate, subject_of};
use crate::policy::{self, Activity, Enrichment, MailboxPurpose, ServiceUsage, Subject};
use crate::policy::{CaseSubject, UsageIndex};
use crate::report::{CsvChunks, ReportRow, ReportStats};

/// Users enriched per `$batch`: one request each (the mailbox kind; the
/// manager comes with the page through `$expand`), 20 to a batch.
const ENRICH_USERS_PER_BATCH: usize = crate::graph::MAX_BATCH;
/// The manager's fields the report needs, expanded into each page of users:
/// one request per page instead of one per user who is not plainly active
/// (Graph's `$expand=manager` on `GET /users`; not an advanced query, so it
/// combines with the `startswith` partition filter).
const MANAGER_EXPAND: &str = "manager($select=id,displayName,mail,userPrincipalName)";
/// Restarts of a partition whose skiptoken expired before giving up.
const MAX_RESTARTS: u32 = 3;
/// Part blobs are written in blocks of this size, and rows are encoded in
/// chunks of `ROW_CHUNK`: what a partition in flight holds of its rows
/// (16 partitions at once; a part of a big tenant is megabytes). 50,000
/// blocks still allow 12 GiB a part.
pub const PART_BLOCK: usize = 256 * 1024;
const ROW_CHUNK: usize = 64 * 1024;

/// What a partition found. Written as JSON after its rows: its existence
/// marks the partition done.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionResult {
    pub partition: Partition,
    /// Non-empty when the partition was split instead of scanned.
    pub split: Vec<Partition>,
    pub stats: ReportStats,
    pub rows: u64,
    pub candidates: Vec<Candidate>,
    /// Users whose enrichment could not be read (a protective flag may be
    /// missing): the run must not act.
    pub enrichment_gaps: u64,
    /// User records Graph sent that did not decode: reported `unknown`
    /// (`no-signin-data`), never acted on.
    #[serde(default)]
    pub unreadable: u64,
    /// Where those records failed (property paths, a few), for the warning.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unreadable_paths: BTreeSet<String>,
    /// A guest audit's users (lower-case ids) that had an open case when
    /// the run started, listed or not: the open cases it may advance (a
    /// full run advances every open case; a guest audit only those of the
    /// guests it saw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paged_with_case: Vec<String>,
}

/// Paths of unreadable records kept per partition for the summary.
const UNREADABLE_PATHS_KEPT: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl PartitionError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Graph(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
        }
    }
}

/// Where the rows of a partition go.
pub trait RowSink {
    fn write(
        &mut self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send;
    /// Forgets every row written so far: the partition starts again (an
    /// expired skiptoken), and its rows must not be written twice.
    fn restart(&mut self);
}

/// A user waiting for enrichment.
struct Pending {
    user: User,
    subject: Subject,
    activity: Activity,
    unmanaged_guest: bool,
}

/// Scans `partition`. Rows are handed to `sink` in chunks (no header).
pub async fn scan_partition<S: RowSink + Send>(
    graph: &GraphClient,
    config: &Config,
    ctx: &RunContext,
    usage: Option<&UsageIndex>,
    partition: &Partition,
    sink: &mut S,
) -> Result<PartitionResult, PartitionError> {
    let mut restarts = 0;
    loop {
        match scan_once(graph, config, ctx, usage, partition, sink).await {
            Err(PartitionError::Graph(GraphError::ExpiredSkipToken)) if restarts < MAX_RESTARTS => {
                restarts += 1;
                sink.restart();
                tracing::warn!(partition = %partition.key(), restarts, "skiptoken expired; restarting the partition");
            }
            other => return other,
        }
    }
}

async fn scan_once<S: RowSink + Send>(
    graph: &GraphClient,
    config: &Config,
    ctx: &RunContext,
    usage: Option<&UsageIndex>,
    partition: &Partition,
    sink: &mut S,
) -> Result<PartitionResult, PartitionError> {
    let query = UserQuery {
        select: SCAN_SELECT.iter().map(|s| s.to_string()).collect(),
        filter: Some(match ctx.scope.filter() {
            Some(scope) => format!("{scope} and {}", partition.filter()),
            None => partition.filter(),
        }),
        top: Some(ctx.page_size),
        // B2C users have no manager to report (and no enrichment at all).
        expand: (config.tenant_kind == TenantKind::Workforce).then(|| MANAGER_EXPAND.to_owned()),
        ..UserQuery::default()
    };
    let listing = graph.users_listing(&query);
    let mut link = listing.first.clone();
    let mut first_page = true;
    let mut out = Accumulator::new(config, ctx);
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let page = graph.users_page(&listing, &link).await?;
        if first_page && page.next_link.is_some() && partition.can_split() {
            return Ok(PartitionResult {
                partition: partition.clone(),
                split: partition.children(),
                stats: ReportStats::new(config.policy.inactive_after_days),
                rows: 0,
                candidates: Vec::new(),
                enrichment_gaps: 0,
                unreadable: 0,
                unreadable_paths: BTreeSet::new(),
                paged_with_case: Vec::new(),
            });
        }
        first_page = false;
        for record in page.value {
            let (user, unreadable) = match record {
                UserRecord::User(user) => (*user, false),
                UserRecord::Unreadable(odd) => {
                    out.unreadable += 1;
                    if out.unreadable_paths.len() < UNREADABLE_PATHS_KEPT {
                        out.unreadable_paths.insert(odd.path.clone());
                    }
                    (odd.as_user(), true)
                }
            };
            // Graph applies the filter; a user outside it would be counted
            // twice (by its own partition too), so trust but verify.
            // An unreadable record without a UPN is counted where Graph's
            // filter put it: it cannot be placed otherwise.
            let placed = match user.user_principal_name.as_deref() {
                Some(upn) => partition.contains(upn),
                None => unreadable,
            };
            if !placed {
                continue;
            }
            out.stats.count_scanned();
            if !ctx.scope.is_all() {
                let id = user.id.to_ascii_lowercase();
                if ctx.cases.contains_key(&id) {
                    out.paged_with_case.push(id);
                }
            }
            let mut subject = subject_of(&user, usage);
            subject.unreadable = unreadable;
            let activity = policy::classify(&subject, &config.policy, ctx.now);
            let unmanaged_guest = is_unmanaged_guest(graph, &user).await;
            if activity.is_plainly_active() && !unmanaged_guest {
                continue;
            }
            pending.push(Pending {
                user,
                subject,
                activity,
                unmanaged_guest,
            });
            if pending.len() >= ENRICH_USERS_PER_BATCH {
                out.judge(graph, std::mem::take(&mut pending), sink).await?;
            }
        }
        match page.next_link {
            Some(next) => link = next,
            None => break,
        }
    }
    out.judge(graph, pending, sink).await?;
    out.finish(partition, sink).await
}

/// Whether the guest is unmanaged; a failed realm lookup is not a finding
/// (the guest is judged like any other, and a reset re-checks it anyway).
async fn is_unmanaged_guest(graph: &GraphClient, user: &User) -> bool {
    graph.is_unmanaged_guest(user).await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "userrealm lookup failed; guest not marked unmanaged");
        false
    })
}

/// The rows, stats and candidates of one partition.
struct Accumulator<'a> {
    config: &'a Config,
    ctx: &'a RunContext,
    csv: CsvChunks,
    stats: ReportStats,
    rows: u64,
    candidates: Vec<Candidate>,
    enrichment_gaps: u64,
    unreadable: u64,
    unreadable_paths: BTreeSet<String>,
    paged_with_case: Vec<String>,
}

/// Manager and mailbox kind of one user, from a `$batch`.
#[derive(Default)]
struct Looked {
    manager_name: Option<String>,
    manager_email: Option<String>,
    mailbox: Option<MailboxPurpose>,
    gap: bool,
}

impl<'a> Accumulator<'a> {
    fn new(config: &'a Config, ctx: &'a RunContext) -> Self {
        Self {
            config,
            ctx,
            csv: CsvChunks::without_header(ROW_CHUNK),
            stats: ReportStats::new(config.policy.inactive_after_days),
            rows: 0,
            candidates: Vec::new(),
            enrichment_gaps: 0,
            unreadable: 0,
            unreadable_paths: BTreeSet::new(),
            paged_with_case: Vec::new(),
        }
    }

    async fn judge<S: RowSink + Send>(
        &mut self,
        graph: &GraphClient,
        pending: Vec<Pending>,
        sink: &mut S,
    ) -> Result<(), PartitionError> {
        if pending.is_empty() {
            return Ok(());
        }
        let looked = self.look_up(graph, &pending).await?;
        for (p, looked) in pending.into_iter().zip(looked) {
            if looked.gap {
                self.enrichment_gaps += 1;
            }
            let id = p.subject.id.clone();
            let enrichment = Enrichment {
                job_title: p.user.job_title.clone(),
                mailbox: looked.mailbox,
                privileged_role: self.ctx.privileged.contains(&id),
                in_excluded_group: self.ctx.excluded.contains(&id),
                unmanaged_guest: p.unmanaged_guest,
                reenabled_at: self.ctx.reenabled.get(&id).copied(),
                hold: self.ctx.holds.get(&id).copied(),
            };
            let assessment = policy::assess(
                &p.subject,
                p.activity,
                &enrichment,
                &self.config.policy,
                self.ctx.now,
            );
            if assessment.verdict == policy::Verdict::Active {
                continue;
            }
            let direct_licenses = p.user.assigned_licenses.iter().any(|l| {
                !p.user.license_assignment_states.iter().any(|s| {
                    s.sku_id.as_deref() == Some(l.sku_id.as_str()) && s.assigned_by_group.is_some()
                })
            });
            let subject = if assessment.action == policy::Action::ResetRedemption {
                CaseSubject::UnmanagedGuest
            } else if assessment
                .flags
                .contains(&policy::RiskFlag::PendingInvitation)
            {
                CaseSubject::PendingInvitation
            } else if p.subject.is_guest {
                CaseSubject::Guest
            } else {
                CaseSubject::Member
            };
            let resets = subject == CaseSubject::UnmanagedGuest
                && self.config.policy.guests.unmanaged == UnmanagedGuests::Reset;
            if assessment.verdict.is_actionable() || resets {
                self.candidates.push(Candidate {
                    subject,
                    user: id.clone(),
                    never_signed_in: assessment.verdict == policy::Verdict::NeverSignedIn,
                    has_user_mailbox: looked.mailbox == Some(MailboxPurpose::User),
                    has_direct_licenses: direct_licenses,
                    account_enabled: p.subject.account_enabled,
                    last_activity: assessment.last_activity.map(|l| l.at),
                });
            }
            let row = self.row(&p, &assessment, looked);
            self.stats.add(&row);
            self.rows += 1;
            if let Some(chunk) = self.csv.push(&row) {
                sink.write(chunk).await?;
            }
        }
        Ok(())
    }

    /// Manager (expanded into the page) and mailbox kind (one `$batch` per
    /// twenty members; guests have no mailbox here) for each pending user.
    /// B2C users have neither a mailbox nor, as a rule, a manager.
    async fn look_up(
        &self,
        graph: &GraphClient,
        pending: &[Pending],
    ) -> Result<Vec<Looked>, PartitionError> {
        let mut looked: Vec<Looked> = pending
            .iter()
            .map(|p| {
                let manager = p.user.manager.clone().unwrap_or_default();
                Looked {
                    manager_name: manager.display_name,
                    manager_email: manager.mail.or(manager.user_principal_name),
                    ..Looked::default()
                }
            })
            .collect();
        if self.config.tenant_kind == TenantKind::B2c {
            return Ok(looked);
        }
        let mut items = Vec::new();
        let mut owners = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            // An unreadable record is `unknown` whatever its mailbox.
            if !p.subject.is_guest && !p.subject.unreadable {
                items.push(BatchItem::get(graph.batch_path(
                    &["users", p.subject.id.as_str(), "mailboxSettings"],
                    &[("$select", "userPurpose")],
                )));
                owners.push(i);
            }
        }
        if items.is_empty() {
            return Ok(looked);
        }
        let answers = graph.batch(&items).await?;
        for (i, answer) in owners.into_iter().zip(answers) {
            let slot = &mut looked[i];
            match answer {
                Ok(r) => match r.json::<crate::graph::MailboxSettings>() {
                    Ok(s) => {
                        slot.mailbox = s.user_purpose.as_deref().and_then(MailboxPurpose::parse)
                    }
                    Err(_) => slot.gap = true,
                },
                // No mailbox: a fact, not a gap.
                Err(GraphError::NotFound) => {}
                Err(GraphError::Permanent { code, .. })
                    if code == "MailboxNotEnabledForRESTAPI" || code == "ErrorMailboxNotFound" => {}
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "enrichment lookup failed; the run will not act");
                    slot.gap = true;
                }
            }
        }
        Ok(looked)
    }

    fn row(&self, p: &Pending, a: &policy::Assessment, looked: Looked) -> ReportRow {
        let u = &p.user;
        let sign = p.subject.sign_ins.clone().unwrap_or_default();
        let usage: ServiceUsage = p.subject.usage.clone().unwrap_or_default();
        let case = self.ctx.cases.get(&p.subject.id);
        let next_step_date = match case {
            Some(c) => c.next_due,
            None => (a.verdict.is_actionable()
                && self.config.policy.mode == Mode::Enforce
                && self.ctx.actionable)
                .then(|| policy::phases::due_at(self.ctx.now, self.config.policy.phases.notify)),
        };
        // An open case's own next step overrides the policy's first one.
        let recommended_action = match case.and_then(|c| c.next_step) {
            Some(kind) => policy::Action::from_step(kind.as_str()).unwrap_or(a.action),
            None => a.action,
        };
        ReportRow {
            user_id: p.subject.id.clone(),
            user_principal_name: p.subject.upn.clone(),
            display_name: u.display_name.clone(),
            user_type: match (&u.user_type, p.subject.unreadable) {
                (Some(t), _) => t.as_str().to_owned(),
                (None, true) => String::new(),
                (None, false) => "Member".into(),
            },
            account_enabled: p.subject.account_enabled,
            created: u.created_date_time,
            last_successful_sign_in: sign.last_successful,
            last_interactive_sign_in: sign.last_interactive,
            last_non_interactive_sign_in: sign.last_non_interactive,
            exchange_last_activity: usage.exchange,
            onedrive_last_activity: usage.onedrive,
            sharepoint_last_activity: usage.sharepoint,
            teams_last_activity: usage.teams,
            last_activity: a.last_activity.map(|l| l.at),
            last_activity_source: a.last_activity.map(|l| l.source),
            days_inactive: a.days_inactive,
            licenses: u
                .assigned_licenses
                .iter()
                .map(|l| {
                    self.ctx
                        .sku_names
                        .get(&l.sku_id.to_ascii_lowercase())
                        .cloned()
                        .unwrap_or_else(|| l.sku_id.clone())
                })
                .collect(),
            department: u.department.clone(),
            job_title: u.job_title.clone(),
            manager_name: looked.manager_name,
            manager_email: looked.manager_email,
            risk_flags: a.flags.clone(),
            verdict: Some(a.verdict),
            recommended_action: Some(recommended_action),
            phase: case.map(|c| c.phase.clone()),
            next_step_date,
        }
    }

    async fn finish<S: RowSink + Send>(
        self,
        partition: &Partition,
        sink: &mut S,
    ) -> Result<PartitionResult, PartitionError> {
        let (rest, _) = self.csv.finish();
        if !rest.is_empty() {
            sink.write(rest).await?;
        }
        Ok(PartitionResult {
            partition: partition.clone(),
            split: Vec::new(),
            stats: self.stats,
            rows: self.rows,
            candidates: self.candidates,
            enrichment_gaps: self.enrichment_gaps,
            unreadable: self.unreadable,
            unreadable_paths: self.unreadable_paths,
            paged_with_case: self.paged_with_case,
        })
    }
}

/// Rows collected in memory (tests, small partitions).
#[derive(Debug, Default)]
pub struct MemorySink(pub Vec<u8>);

impl RowSink for MemorySink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), crate::store::StoreError> {
        self.0.extend(bytes);
        Ok(())
    }
    fn restart(&mut self) {
        self.0.clear();
    }
}
