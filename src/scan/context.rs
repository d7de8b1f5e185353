//! What a scan looks up once per run, before any partition: license names,
//! who is excluded, who holds a directory role, who was re-enabled by a
//! person, the usage report, the directory quota.
//!
//! Safety first: a lookup that protects people (exclusions, roles,
//! re-enablements) that fails fails the run; a scan that cannot tell who is
//! protected must not plan anything. A failed usage report only makes the
//! run non-actionable (it can still report).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use crate::config::{ActivitySource, Config, TenantKind};
use crate::graph::{BatchItem, GraphClient, GraphError, ReportPeriod};
use crate::ids::RunId;
use crate::lifecycle::reenable::enabled_by_others;
use crate::policy::UsageIndex;
use crate::policy::{Hold, ServiceUsage};
use crate::report::DirectoryQuota;

pub use crate::graph::ENABLE_ACCOUNT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum UsageStatus {
    /// Not a configured source (B2C, or left out of `activity_sources`).
    NotUsed,
    Loaded {
        users: u64,
    },
    /// Names stayed concealed: the report cannot be joined by UPN.
    Concealed,
    Failed {
        reason: String,
    },
}

/// Shared by every partition of a run; stored with the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunContext {
    pub run: RunId,
    /// The run's "now": every partition judges against the same instant.
    pub now: DateTime<Utc>,
    pub sku_names: BTreeMap<String, String>,
    pub excluded: BTreeSet<String>,
    pub privileged: BTreeSet<String>,
    /// Users someone other than dormant enabled, with when.
    pub reenabled: BTreeMap<String, DateTime<Utc>>,
    /// Holds dormant keeps (a person restored or re-enabled the user), by
    /// user, as they stood when the run started.
    #[serde(default)]
    pub holds: BTreeMap<String, Hold>,
    pub usage: UsageStatus,
    pub directory_quota: Option<DirectoryQuota>,
    /// False when a configured activity source could not be read: the run
    /// reports but plans no action.
    pub actionable: bool,
    /// Open cases by user, as they stood when the run started: the
    /// report's `phase` and `nextStepDate`.
    #[serde(default)]
    pub cases: BTreeMap<String, crate::lifecycle::case::CaseView>,
    pub warnings: Vec<String>,
    /// `$top` of partition pages: a partition whose first page is full
    /// splits, so this is also the split threshold.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Every user, or guests only (the run's own scope).
    #[serde(default, skip_serializing_if = "crate::scan::run::ScanScope::is_all")]
    pub scope: crate::scan::run::ScanScope,
}

fn default_page_size() -> u32 {
    super::run::DEFAULT_PAGE_SIZE
}

/// Why a run could not gather what protects people.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("could not read the members of excluded group {group}: {source}")]
    ExcludedGroup {
        group: String,
        #[source]
        source: GraphError,
    },
    #[error("could not read directory role assignments: {0}")]
    Roles(#[source] GraphError),
    #[error("could not read who was re-enabled (directory audits): {0}")]
    Audits(#[source] GraphError),
    #[error("could not read license names (subscribedSkus): {0}")]
    Skus(#[source] GraphError),
}

impl ContextError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ExcludedGroup { source, .. } => source.is_transient(),
            Self::Roles(e) | Self::Audits(e) | Self::Skus(e) => e.is_transient(),
        }
    }
}

impl RunContext {
    pub async fn gather(
        graph: &GraphClient,
        config: &Config,
        run: RunId,
        now: DateTime<Utc>,
    ) -> Result<(Self, Option<UsageIndex>), ContextError> {
        let mut ctx = RunContext {
            run,
            now,
            sku_names: BTreeMap::new(),
            excluded: BTreeSet::new(),
            privileged: BTreeSet::new(),
            reenabled: BTreeMap::new(),
            holds: BTreeMap::new(),
            usage: UsageStatus::NotUsed,
            directory_quota: None,
            actionable: true,
            cases: BTreeMap::new(),
            warnings: Vec::new(),
            page_size: default_page_size(),
            scope: Default::default(),
        };

        if config.tenant_kind == TenantKind::Workforce {
            for sku in graph.subscribed_skus().await.map_err(ContextError::Skus)? {
                ctx.sku_names
                    .insert(sku.sku_id.to_ascii_lowercase(), sku.sku_part_number);
            }
        }

        for group in &config.policy.exclude_groups {
            let group = group.to_string();
            let members: Vec<String> = graph
                .group_transitive_member_ids(&group)
                .try_collect()
                .await
                .map_err(|source| ContextError::ExcludedGroup {
                    group: group.clone(),
                    source,
                })?;
            ctx.excluded
                .extend(members.into_iter().map(|m| m.to_ascii_lowercase()));
        }

        ctx.privileged = privileged_principals(graph).await?;

        let since = now - Duration::days(i64::from(config.policy.inactive_after_days));
        // The same (cached) answer the night's re-checks use.
        let audits = graph
            .enable_audits_since(since, now)
            .await
            .map_err(ContextError::Audits)?;
        // Anyone but dormant's own app: a person, or another system.
        let own_app = graph.own_app_id().await;
        ctx.reenabled = enabled_by_others(audits.iter(), own_app.as_deref());

        let mut index = None;
        let wants_usage = config.tenant_kind == TenantKind::Workforce
            && config
                .policy
                .activity_sources
                .contains(&ActivitySource::UsageReport);
        if wants_usage {
            match load_usage(graph).await {
                Ok(idx) if idx.is_concealed() => {
                    ctx.usage = UsageStatus::Concealed;
                    ctx.actionable = false;
                    ctx.warnings.push("the usage report kept user names concealed, so it could not be joined; no action is planned from this run".into());
                }
                Ok(idx) => {
                    ctx.usage = UsageStatus::Loaded {
                        users: idx.len() as u64,
                    };
                    index = Some(idx);
                }
                Err(e) => {
                    ctx.usage = UsageStatus::Failed {
                        reason: e.to_string(),
                    };
                    ctx.actionable = false;
                    ctx.warnings.push(format!(
                        "the usage report could not be read ({e}); no action is planned from this run"
                    ));
                }
            }
        }

        if config.tenant_kind == TenantKind::B2c {
            match graph.directory_quota().await {
                Ok(Some(q)) => {
                    let quota = DirectoryQuota {
                        used: q.used.max(0) as u64,
                        total: q.total.max(0) as u64,
                    };
                    if quota.is_near_limit() {
                        ctx.warnings.push(format!(
                            "the directory quota is above 90 % ({} of {} objects)",
                            quota.used, quota.total
                        ));
                    }
                    ctx.directory_quota = Some(quota);
                }
                Ok(None) => {}
                Err(e) => ctx
                    .warnings
                    .push(format!("the directory quota could not be read ({e})")),
            }
        }
        Ok((ctx, index))
    }
}

/// `$batch` calls in flight while sorting role holders into users and groups.
const ROLE_PROBE_BATCHES_AT_ONCE: usize = 8;

/// Every principal holding a directory role, actively or PIM-eligible, with the members of
/// role-assignable groups expanded (a role held through a group is a role).
async fn privileged_principals(graph: &GraphClient) -> Result<BTreeSet<String>, ContextError> {
    let assignments: Vec<_> = graph
        .role_assignments()
        .try_collect()
        .await
        .map_err(ContextError::Roles)?;
    let mut principals: BTreeSet<String> = assignments
        .into_iter()
        .filter_map(|a| a.principal_id)
        .map(|p| p.to_ascii_lowercase())
        .collect();
    // PIM-eligible holders are privileged like active ones.
    principals.extend(
        graph
            .eligible_principals()
            .await
            .map_err(ContextError::Roles)?,
    );
    // Which principals are groups: `GET /groups/{id}` answers 404 for users.
    // A big tenant has thousands of role holders: the batches go out
    // several at a time (the pacer still spends the budget per item).
    // Owned chunks and a prebuilt list of futures: a closure over borrowed
    // items would not be `Send` for every lifetime, which the queue
    // handler that gathers the context needs.
    let ids: Vec<String> = principals.iter().cloned().collect();
    let probes: Vec<_> = ids
        .chunks(crate::graph::MAX_BATCH)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let items: Vec<BatchItem> = chunk
                .iter()
                .map(|id| BatchItem::get(graph.batch_path(&["groups", id], &[("$select", "id")])))
                .collect();
            let graph = graph.clone();
            async move { graph.batch(&items).await.map(|answers| (chunk, answers)) }
        })
        .collect();
    let mut probes = futures::stream::iter(probes).buffered(ROLE_PROBE_BATCHES_AT_ONCE);
    let mut groups = Vec::new();
    while let Some(probe) = probes.next().await {
        let (chunk, answers) = probe.map_err(ContextError::Roles)?;
        for (id, answer) in chunk.iter().zip(answers) {
            match answer {
                Ok(_) => groups.push(id.clone()),
                Err(GraphError::NotFound) => {}
                Err(e) => return Err(ContextError::Roles(e)),
            }
        }
    }
    drop(probes);
    let mut all = principals;
    for group in groups {
        let members: Vec<String> = graph
            .group_transitive_member_ids(&group)
            .try_collect()
            .await
            .map_err(ContextError::Roles)?;
        all.extend(members.into_iter().map(|m| m.to_ascii_lowercase()));
    }
    Ok(all)
}

/// The D180 usage report, names revealed for the download and concealment
/// restored on every path (the client's guard).
async fn load_usage(graph: &GraphClient) -> Result<UsageIndex, GraphError> {
    graph
        .with_revealed_names(|graph| async move {
            let rows = graph
                .office365_active_user_detail(ReportPeriod::D180)
                .await?;
            let mut index = UsageIndex::default();
            futures::pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                if index.refreshed.is_none() {
                    index.refreshed = row.report_refresh_date;
                }
                if row.is_deleted {
                    continue;
                }
                index.insert(
                    &row.user_principal_name,
                    &ServiceUsage {
                        exchange: row.exchange_last_activity,
                        onedrive: row.onedrive_last_activity,
                        sharepoint: row.sharepoint_last_activity,
                        teams: row.teams_last_activity,
                    },
                );
            }
            Ok(index)
        })
        .await
}
