//! Guests: whether one is unmanaged (its home realm is "viral"), who is
//! responsible for it (sponsors, else whoever invited it).
//!
//! The realm answer is per domain (FACTS), so each domain is asked once per
//! [`REALM_FRESH_FOR`] however many guests share it and however many
//! partitions ask at the same moment (one asks, the others wait for its
//! answer), and never more than [`REALM_CONCURRENCY`] domains at once: the
//! endpoint is unauthenticated and undocumented, and dormant is a guest
//! there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt as _;
use reqwest::Method;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::client::{GraphClient, GraphRequest};
use super::error::GraphError;
use super::models::{DirectoryObject, ExternalUserState, User, UserRealm, UserType};
use super::pacer::RequestClass;

/// How long a domain's answer is kept: longer than a scan, shorter than
/// the time between two nightly scans, so each run asks each domain once.
pub const REALM_FRESH_FOR: Duration = Duration::from_secs(12 * 3_600);
/// Realm lookups in flight at once.
pub const REALM_CONCURRENCY: usize = 4;

/// The audit activity Entra writes when a guest is invited.
pub const INVITE_EXTERNAL_USER: &str = "Invite external user";

/// One domain's answer, with when it was fetched; empty until then.
type RealmCell = Arc<OnceCell<(Instant, UserRealm)>>;

/// Per-domain realm answers, one lookup per domain at a time.
#[derive(Debug)]
pub(crate) struct Realms {
    cells: Mutex<HashMap<String, RealmCell>>,
    in_flight: Semaphore,
}

impl Default for Realms {
    fn default() -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
            in_flight: Semaphore::new(REALM_CONCURRENCY),
        }
    }
}

impl Realms {
    /// The domain's cell; a stale answer is replaced by an empty cell.
    fn cell(&self, domain: &str) -> RealmCell {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let cell = cells.entry(domain.to_owned()).or_default();
        if cell
            .get()
            .is_some_and(|(at, _)| at.elapsed() >= REALM_FRESH_FOR)
        {
            *cell = Arc::default();
        }
        cell.clone()
    }
}

/// The domain of a mail address, lower case.
fn domain_of(email: &str) -> Option<String> {
    email
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty() && !d.contains(['/', '?', '#', ' ']))
}

impl GraphClient {
    /// The home realm of `email`'s domain:
    /// `GET {authority}/common/userrealm?user=…&api-version=2.1`
    /// (unauthenticated, undocumented; FACTS). A failed lookup is not kept:
    /// the next caller asks again.
    pub async fn user_realm(&self, email: &str) -> Result<UserRealm, GraphError> {
        let domain = domain_of(email)
            .ok_or_else(|| GraphError::permanent(0, "InvalidEmail", "not an email address"))?;
        let realms = self.realms();
        let cell = realms.cell(&domain);
        let (_, realm) = cell
            .get_or_try_init(|| async {
                let _slot = realms
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|_| GraphError::Transient("realm lookups closed".into()))?;
                let mut url = self.authority_host().clone();
                url.set_path("/common/userrealm");
                // Any mailbox of the domain gives the domain's answer; ask
                // with a neutral one so no real address leaves the tenant.
                url.query_pairs_mut()
                    .append_pair("user", &format!("dormant-probe@{domain}"))
                    .append_pair("api-version", "2.1");
                let mut req = GraphRequest::new(
                    Method::GET,
                    url,
                    RequestClass::Unmetered,
                    "/common/userrealm",
                );
                req.authenticated = false;
                let realm: UserRealm = self.send(req).await?.json()?;
                Ok::<_, GraphError>((Instant::now(), realm))
            })
            .await?;
        Ok(realm.clone())
    }

    /// A guest homed in another Entra tenant (`ExternalAzureAD`) that
    /// redeemed its invitation, whose home realm answers `IsViral` (FACTS).
    /// A guest whose redemption is pending (after a reset, say) is not: it
    /// will redeem with whatever identity it has then.
    pub async fn is_unmanaged_guest(&self, user: &User) -> Result<bool, GraphError> {
        if user.user_type != Some(UserType::Guest)
            || user.external_user_state == Some(ExternalUserState::PendingAcceptance)
        {
            return Ok(false);
        }
        let external = user
            .identities
            .iter()
            .any(|i| i.issuer.as_deref() == Some("ExternalAzureAD"));
        let Some(mail) = user.mail.as_deref().filter(|_| external) else {
            return Ok(false);
        };
        Ok(self.user_realm(mail).await?.is_viral == Some(true))
    }

    /// `GET /users/{id}/sponsors` (v1.0): the users and groups responsible
    /// for a guest.
    pub async fn sponsors(&self, id: &str) -> Result<Vec<DirectoryObject>, GraphError> {
        let url = self.url_with_query(
            &["users", id, "sponsors"],
            &[("$select", "id,displayName,mail,userPrincipalName")],
        );
        match self
            .items::<DirectoryObject>(self.listing(
                url,
                RequestClass::ReadList,
                "/users/{id}/sponsors",
            ))
            .try_collect()
            .await
        {
            Ok(v) => Ok(v),
            Err(GraphError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Who invited the guest: the `Invite external user` audit naming it
    /// (kept 30 days by Entra, so an older invitation has none). The
    /// tenant's invitations are read once a minute for every guest
    /// (directory audits allow 5 requests per 10 s), `now` on dormant's
    /// clock.
    pub async fn inviter_of(
        &self,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, GraphError> {
        let audits = self
            .audits_since(INVITE_EXTERNAL_USER, now - chrono::Duration::days(30), now)
            .await?;
        Ok(audits
            .iter()
            .filter(|a| {
                a.target_resources
                    .iter()
                    .any(|t| t.id.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(id)))
            })
            .filter_map(|a| a.initiated_by.user.as_ref().and_then(|u| u.id.clone()))
            .next_back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_read_from_addresses_only() {
        assert_eq!(
            domain_of("ada@Fabrikam.COM").as_deref(),
            Some("fabrikam.com")
        );
        assert_eq!(domain_of("a@b@c.org").as_deref(), Some("c.org"));
        for bad in ["nobody", "x@", "x@a/b", "x@a?b"] {
            assert_eq!(domain_of(bad), None, "{bad}");
        }
    }
}
