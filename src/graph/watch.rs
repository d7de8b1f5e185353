//! What a re-check needs to know besides the user itself: who enabled an
//! account lately (directory audits: 5 requests per 10 s per app per
//! tenant, so the answer is kept a minute), who is PIM-eligible for a
//! directory role (asked fresh), and which app dormant itself is.
//!
//! Each is kept a short while per process (one client per tenant), so a
//! worker draining ten thousand steps asks once a minute, not ten thousand
//! times. Audit events reach Graph minutes after the fact anyway; what a
//! minute's cache can miss, the account state itself shows (an enabled
//! account dormant had disabled).

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;

use super::client::GraphClient;
use super::error::GraphError;
use super::models::{DirectoryAudit, RoleAssignment};
use super::pacer::RequestClass;

/// How long the audit answer is trusted.
const AUDITS_FRESH_FOR: chrono::Duration = chrono::Duration::seconds(60);

/// How late an audit event may reach Graph after it happened (Entra: "up
/// to an hour" at worst): a refresh asks again this far back from the last
/// fetch, so an event that arrived late is not missed.
const AUDITS_ARRIVE_WITHIN: chrono::Duration = chrono::Duration::hours(2);

/// The audit activity Entra writes when an account is enabled.
pub const ENABLE_ACCOUNT: &str = "Enable account";

#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// One kept answer per audit activity (`Enable account`, `Invite
    /// external user`).
    audits: tokio::sync::Mutex<std::collections::HashMap<&'static str, KeptAudits>>,
    own_app: tokio::sync::OnceCell<Option<String>>,
}

#[derive(Debug)]
struct KeptAudits {
    /// On the caller's clock (dormant's, which tests move).
    fetched: DateTime<Utc>,
    since: DateTime<Utc>,
    audits: Arc<Vec<DirectoryAudit>>,
}

impl GraphClient {
    /// Every `Enable account` audit since `since` (tenant-wide), kept a
    /// minute of `now` (dormant's clock). One caller fetches while the
    /// others wait for its answer. A refresh asks only for what is new
    /// (from the last fetch, less the time events take to arrive) and keeps
    /// the rest: directory audits have a budget of 5 requests per 10 s, and
    /// a month of enables in a large tenant is many pages.
    pub async fn enable_audits_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<DirectoryAudit>>, GraphError> {
        self.audits_since(ENABLE_ACCOUNT, since, now).await
    }

    /// Every audit of `activity` since `since`, kept and refreshed as
    /// [`enable_audits_since`](Self::enable_audits_since) describes.
    pub async fn audits_since(
        &self,
        activity: &'static str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<DirectoryAudit>>, GraphError> {
        let mut slots = self.watch().audits.lock().await;
        let reusable = slots
            .get(activity)
            .filter(|e| e.since <= since && now >= e.fetched);
        if let Some(e) = reusable
            && now - e.fetched < AUDITS_FRESH_FOR
        {
            return Ok(e.audits.clone());
        }
        let (from, mut kept): (DateTime<Utc>, Vec<DirectoryAudit>) = match reusable {
            Some(e) => (
                (e.fetched - AUDITS_ARRIVE_WITHIN).max(since),
                e.audits
                    .iter()
                    .filter(|a| a.activity_date_time.is_none_or(|at| at >= since))
                    .cloned()
                    .collect(),
            ),
            None => (since, Vec::new()),
        };
        let fresh: Vec<DirectoryAudit> = self
            .directory_audits_of_activity(activity, from)
            .try_collect()
            .await?;
        let known: std::collections::HashSet<String> = kept.iter().map(|a| a.id.clone()).collect();
        kept.extend(fresh.into_iter().filter(|a| !known.contains(&a.id)));
        let audits = Arc::new(kept);
        slots.insert(
            activity,
            KeptAudits {
                fetched: now,
                since,
                audits: audits.clone(),
            },
        );
        Ok(audits)
    }

    /// Every principal (user or group) PIM-eligible for a directory role
    /// now (`roleEligibilityScheduleInstances`, RoleManagement.Read.Directory;
    /// a scan asks once). An eligible Global Administrator is as privileged
    /// as an active one (FACTS).
    pub async fn eligible_principals(&self) -> Result<BTreeSet<String>, GraphError> {
        let url = self.url_with_query(
            &[
                "roleManagement",
                "directory",
                "roleEligibilityScheduleInstances",
            ],
            &[(
                "$select",
                "id,principalId,roleDefinitionId,directoryScopeId",
            )],
        );
        Ok(self
            .eligibilities(url)
            .await?
            .into_iter()
            .filter_map(|i| i.principal_id)
            .map(|p| p.to_ascii_lowercase())
            .collect())
    }

    /// Whether `principal` (a user, or a role-assignable group) is
    /// PIM-eligible for a directory role right now: asked fresh before every
    /// step, one request.
    pub async fn is_role_eligible(&self, principal: &str) -> Result<bool, GraphError> {
        let filter = format!("principalId eq {}", super::client::odata_quote(principal));
        let url = self.url_with_query(
            &[
                "roleManagement",
                "directory",
                "roleEligibilityScheduleInstances",
            ],
            &[("$filter", &filter), ("$select", "id,principalId")],
        );
        Ok(!self.eligibilities(url).await?.is_empty())
    }

    /// A tenant without Entra ID P2 has no PIM: Graph answers `400
    /// AadPremiumLicenseRequired`, which means "nobody is eligible". Any
    /// other failure is an error: who is privileged must be known before
    /// anything is touched.
    async fn eligibilities(&self, url: url::Url) -> Result<Vec<RoleAssignment>, GraphError> {
        let listing = self.listing(
            url,
            RequestClass::ReadList,
            "/roleManagement/directory/roleEligibilityScheduleInstances",
        );
        match self.collect(listing).await {
            Ok(v) => Ok(v),
            Err(GraphError::Permanent {
                status: 400, code, ..
            }) if code == "AadPremiumLicenseRequired" => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The application id dormant signs in as (`appid` of its own Graph
    /// token, `azp` for v2 tokens), so audit events of its own doing are
    /// told apart from a person's or another app's. `None` when the token
    /// does not say: callers then treat every app as someone else.
    pub async fn own_app_id(&self) -> Option<String> {
        self.watch()
            .own_app
            .get_or_init(|| async {
                let token = self.access_token().await.ok()?;
                app_id_of(token.expose_secret())
            })
            .await
            .clone()
    }
}

/// `appid` (or `azp`) from a JWT's payload, unverified: it is our own token,
/// read only to know our own name.
fn app_id_of(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("appid")
        .or_else(|| claims.get("azp"))
        .and_then(|v| v.as_str())
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            enc(&serde_json::json!({"alg": "RS256"})),
            enc(&claims)
        )
    }

    #[test]
    fn the_app_id_comes_from_appid_or_azp() {
        assert_eq!(
            app_id_of(&jwt(serde_json::json!({"appid": "ABC", "azp": "x"}))).as_deref(),
            Some("abc")
        );
        assert_eq!(
            app_id_of(&jwt(serde_json::json!({"azp": "def"}))).as_deref(),
            Some("def")
        );
        assert_eq!(app_id_of(&jwt(serde_json::json!({"sub": "s"}))), None);
        assert_eq!(app_id_of("not a token"), None);
        assert_eq!(app_id_of("a.!!!.c"), None);
    }
}
