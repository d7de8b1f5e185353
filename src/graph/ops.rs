//! Thin typed operations on users, licenses, groups, roles, deleted items,
//! invitations, audit logs, the organization, mail and the home realm.

use super::client::{GraphClient, GraphRequest, Listing, Page, odata_quote};
use super::error::GraphError;
use super::models::*;
use super::pacer::RequestClass;
use futures::Stream;
use reqwest::Method;

/// A `GET /users` query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// `$select` properties; include `signInActivity` to get sign-in dates
    /// (then Graph caps pages at 120 users whatever `$top` says).
    pub select: Vec<String>,
    pub filter: Option<String>,
    /// Page size; Graph allows up to 999 (120 with `signInActivity`).
    pub top: Option<u32>,
    /// `$count=true` + `ConsistencyLevel: eventual` (not in B2C).
    pub count: bool,
    /// `$expand`, e.g. `manager($select=id,displayName,mail)`.
    pub expand: Option<String>,
}

/// The properties a scan needs for a verdict.
pub const SCAN_SELECT: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "mail",
    "userType",
    "accountEnabled",
    "createdDateTime",
    "creationType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "onPremisesSyncEnabled",
    "jobTitle",
    "department",
    "identities",
    "assignedLicenses",
    "licenseAssignmentStates",
    "signInActivity",
];

impl GraphClient {
    /// The [`Listing`] of `GET /users` for `query`; page it with
    /// [`pages`](GraphClient::pages) or resume it with
    /// [`pages_from`](GraphClient::pages_from).
    pub fn users_listing(&self, query: &UserQuery) -> Listing {
        let select = query.select.join(",");
        let top = query.top.map(|t| t.to_string());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if !select.is_empty() {
            pairs.push(("$select", &select));
        }
        if let Some(f) = &query.filter {
            pairs.push(("$filter", f));
        }
        if let Some(t) = &top {
            pairs.push(("$top", t));
        }
        if let Some(e) = &query.expand {
            pairs.push(("$expand", e));
        }
        // B2C has no `$count` (nor advanced queries): never ask for it there.
        let count = query.count && self.tenant_kind() != crate::config::TenantKind::B2c;
        if count {
            pairs.push(("$count", "true"));
        }
        let url = self.url_with_query(&["users"], &pairs);
        let mut listing = self.listing(url, RequestClass::ReadList, "/users");
        listing.eventual_consistency = count;
        listing
    }

    /// Every user matching `query`.
    pub fn list_users(
        &self,
        query: &UserQuery,
    ) -> impl Stream<Item = Result<User, GraphError>> + Send + 'static {
        self.items::<User>(self.users_listing(query))
    }

    /// One page of users at `link` (first URL of the listing or a saved nextLink).
    pub async fn users_page(
        &self,
        listing: &Listing,
        link: &str,
    ) -> Result<Page<UserRecord>, GraphError> {
        self.page(listing, link).await
    }

    /// `GET /users/{id}`; `select` empty = Graph's default properties.
    pub async fn get_user(&self, id: &str, select: &[&str]) -> Result<User, GraphError> {
        let select = select.join(",");
        let url = if select.is_empty() {
            self.url(&["users", id])
        } else {
            self.url_with_query(&["users", id], &[("$select", &select)])
        };
        self.get_json(url, RequestClass::ReadOne, "/users/{id}")
            .await
    }

    /// `GET /users/{id}`, keeping a record that does not decode as
    /// [`UserRecord::Unreadable`] (a re-check must judge it `unknown`, not
    /// fail on it).
    pub async fn get_user_record(
        &self,
        id: &str,
        select: &[&str],
    ) -> Result<UserRecord, GraphError> {
        let select = select.join(",");
        let url = self.url_with_query(&["users", id], &[("$select", &select)]);
        let resp = self
            .send(GraphRequest::new(
                Method::GET,
                url,
                RequestClass::ReadOne,
                "/users/{id}",
            ))
            .await?;
        match std::str::from_utf8(&resp.body) {
            Ok(text) => Ok(UserRecord::from_json(text)),
            Err(_) => Err(GraphError::permanent(
                resp.status,
                "UnexpectedResponse",
                "the answer is not UTF-8 text",
            )),
        }
    }

    /// Many users by id through `$batch` (20 per call), one result per id in
    /// order; a missing user is `Err(GraphError::NotFound)`. For re-reading the
    /// users of a run right before a destructive step.
    pub async fn get_users(
        &self,
        ids: &[String],
        select: &[&str],
    ) -> Result<Vec<Result<User, GraphError>>, GraphError> {
        let select = select.join(",");
        let items: Vec<super::batch::BatchItem> = ids
            .iter()
            .map(|id| {
                let query: Vec<(&str, &str)> = if select.is_empty() {
                    Vec::new()
                } else {
                    vec![("$select", select.as_str())]
                };
                super::batch::BatchItem::get(self.batch_path(&["users", id], &query))
            })
            .collect();
        Ok(self
            .batch(&items)
            .await?
            .into_iter()
            .map(|r| r.and_then(|resp| resp.json::<User>()))
            .collect())
    }

    /// `PATCH /users/{id} {"accountEnabled": …}`.
    pub async fn set_account_enabled(&self, id: &str, enabled: bool) -> Result<(), GraphError> {
        self.write(
            Method::PATCH,
            self.url(&["users", id]),
            Some(&serde_json::json!({ "accountEnabled": enabled })),
            RequestClass::Write,
            "/users/{id}",
        )
        .await
        .map(|_| ())
    }

    /// Sign-in blocked and every session revoked, in one `$batch` (two
    /// writes, one round trip; each still counts against the write budget).
    /// `disable: false` only revokes (the account is disabled already).
    pub async fn disable_and_revoke(&self, id: &str, disable: bool) -> Result<(), GraphError> {
        let mut items = Vec::with_capacity(2);
        if disable {
            items.push(super::batch::BatchItem {
                method: Method::PATCH,
                url: self.batch_path(&["users", id], &[]),
                body: Some(serde_json::json!({ "accountEnabled": false })),
            });
        }
        items.push(super::batch::BatchItem {
            method: Method::POST,
            url: self.batch_path(&["users", id, "revokeSignInSessions"], &[]),
            body: None,
        });
        for answer in self.batch(&items).await? {
            answer?;
        }
        Ok(())
    }

    /// `DELETE /users/{id}`: a soft delete; the user stays restorable in
    /// `/directory/deletedItems` for 30 days.
    pub async fn delete_user(&self, id: &str) -> Result<(), GraphError> {
        self.write::<()>(
            Method::DELETE,
            self.url(&["users", id]),
            None,
            RequestClass::Write,
            "/users/{id}",
        )
        .await
        .map(|_| ())
    }

    /// `POST /users/{id}/revokeSignInSessions`: signs the user out everywhere.
    pub async fn revoke_sign_in_sessions(&self, id: &str) -> Result<(), GraphError> {
        self.write::<()>(
            Method::POST,
            self.url(&["users", id, "revokeSignInSessions"]),
            None,
            RequestClass::Write,
            "/users/{id}/revokeSignInSessions",
        )
        .await
        .map(|_| ())
    }

    /// `POST /users/{id}/assignLicense` removing `sku_ids`. Licenses inherited
    /// from a group (`licenseAssignmentStates[].assignedByGroup`) cannot be
    /// removed this way; Graph refuses them.
    pub async fn remove_licenses(&self, id: &str, sku_ids: &[String]) -> Result<(), GraphError> {
        self.write(
            Method::POST,
            self.url(&["users", id, "assignLicense"]),
            Some(&serde_json::json!({ "addLicenses": [], "removeLicenses": sku_ids })),
            RequestClass::Write,
            "/users/{id}/assignLicense",
        )
        .await
        .map(|_| ())
    }

    /// `POST /users/{id}/assignLicense` adding `licenses` back (a restore),
    /// with the plans that were disabled on each.
    pub async fn add_licenses(
        &self,
        id: &str,
        licenses: &[AssignedLicense],
    ) -> Result<(), GraphError> {
        self.write(
            Method::POST,
            self.url(&["users", id, "assignLicense"]),
            Some(&serde_json::json!({ "addLicenses": licenses, "removeLicenses": [] })),
            RequestClass::Write,
            "/users/{id}/assignLicense",
        )
        .await
        .map(|_| ())
    }

    /// Groups and directory roles the user is in, nested groups included
    /// (`GET /users/{id}/transitiveMemberOf?$select=id`): whether a user
    /// became excluded or privileged since a case opened.
    pub async fn transitive_member_of(&self, id: &str) -> Result<Vec<DirectoryObject>, GraphError> {
        let url = self.url_with_query(
            &["users", id, "transitiveMemberOf"],
            &[("$select", "id,isAssignableToRole"), ("$top", "999")],
        );
        let l = self.listing(
            url,
            RequestClass::ReadList,
            "/users/{id}/transitiveMemberOf",
        );
        self.collect(l).await
    }

    /// `GET /subscribedSkus` (`skuId` → `skuPartNumber`).
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, GraphError> {
        let l = self.listing(
            self.url(&["subscribedSkus"]),
            RequestClass::ReadList,
            "/subscribedSkus",
        );
        self.collect(l).await
    }

    /// `GET /users/{id}/manager`; `None` when the user has none (Graph: 404).
    pub async fn manager(&self, id: &str) -> Result<Option<DirectoryObject>, GraphError> {
        let url = self.url_with_query(
            &["users", id, "manager"],
            &[("$select", "id,displayName,mail,userPrincipalName")],
        );
        match self
            .get_json(url, RequestClass::ReadOne, "/users/{id}/manager")
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(GraphError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /users/{id}/mailboxSettings`; `None` when the user has no mailbox
    /// (Graph answers 404 `MailboxNotEnabledForRESTAPI`).
    pub async fn mailbox_settings(&self, id: &str) -> Result<Option<MailboxSettings>, GraphError> {
        let url = self.url(&["users", id, "mailboxSettings"]);
        match self
            .get_json(url, RequestClass::ReadOne, "/users/{id}/mailboxSettings")
            .await
        {
            Ok(m) => Ok(Some(m)),
            Err(GraphError::NotFound) => Ok(None),
            Err(GraphError::Permanent { code, .. })
                if code == "MailboxNotEnabledForRESTAPI" || code == "ErrorMailboxNotFound" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Object ids of every user in a group, nested groups included
    /// (`GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=id`).
    pub fn group_transitive_member_ids(
        &self,
        group_id: &str,
    ) -> impl Stream<Item = Result<String, GraphError>> + Send + 'static {
        use futures::TryStreamExt;
        let url = self.url_with_query(
            &[
                "groups",
                group_id,
                "transitiveMembers",
                "microsoft.graph.user",
            ],
            &[("$select", "id"), ("$top", "999")],
        );
        let l = self.listing(
            url,
            RequestClass::ReadList,
            "/groups/{id}/transitiveMembers",
        );
        self.items::<DirectoryObject>(l).map_ok(|o| o.id)
    }

    /// Directory role assignments held by a principal (not via groups).
    pub async fn role_assignments_of(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>, GraphError> {
        let filter = format!("principalId eq {}", odata_quote(principal_id));
        let url = self.url_with_query(
            &["roleManagement", "directory", "roleAssignments"],
            &[("$filter", &filter)],
        );
        let l = self.listing(
            url,
            RequestClass::ReadList,
            "/roleManagement/directory/roleAssignments",
        );
        self.collect(l).await
    }

    /// `GET /directory/deletedItems/{id}`.
    pub async fn deleted_item(&self, id: &str) -> Result<DeletedItem, GraphError> {
        self.get_json(
            self.url(&["directory", "deletedItems", id]),
            RequestClass::ReadOne,
            "/directory/deletedItems/{id}",
        )
        .await
    }

    /// `GET /directory/deletedItems/microsoft.graph.user`.
    pub fn deleted_users(
        &self,
    ) -> impl Stream<Item = Result<DeletedItem, GraphError>> + Send + 'static {
        let url = self.url_with_query(
            &["directory", "deletedItems", "microsoft.graph.user"],
            &[("$top", "999")],
        );
        self.items(self.listing(
            url,
            RequestClass::ReadList,
            "/directory/deletedItems/microsoft.graph.user",
        ))
    }

    /// `POST /directory/deletedItems/{id}/restore`: brings the user back with
    /// licenses and groups.
    pub async fn restore_deleted(&self, id: &str) -> Result<(), GraphError> {
        self.write::<()>(
            Method::POST,
            self.url(&["directory", "deletedItems", id, "restore"]),
            None,
            RequestClass::Write,
            "/directory/deletedItems/{id}/restore",
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /directory/deletedItems/{id}`: permanent.
    pub async fn purge_deleted(&self, id: &str) -> Result<(), GraphError> {
        self.write::<()>(
            Method::DELETE,
            self.url(&["directory", "deletedItems", id]),
            None,
            RequestClass::Write,
            "/directory/deletedItems/{id}",
        )
        .await
        .map(|_| ())
    }

    /// `POST /invitations` with `resetRedemption: true`: the guest redeems
    /// again, keeping object id, groups and app assignments. App-only calls
    /// cannot reset users that hold directory roles (Graph answers 403).
    pub async fn reset_redemption(
        &self,
        user_id: &str,
        email: &str,
        redirect_url: &str,
        send_message: bool,
    ) -> Result<Invitation, GraphError> {
        let body = InvitationRequest {
            invited_user_email_address: email.to_string(),
            invite_redirect_url: redirect_url.to_string(),
            send_invitation_message: send_message,
            reset_redemption: true,
            invited_user: InvitedUserRef {
                id: user_id.to_string(),
            },
        };
        self.write(
            Method::POST,
            self.url(&["invitations"]),
            Some(&body),
            RequestClass::Invitation,
            "/invitations",
        )
        .await?
        .json()
    }

    /// Every directory role assignment in the tenant (a scan builds the set
    /// of privileged principals once instead of asking per user).
    pub fn role_assignments(
        &self,
    ) -> impl Stream<Item = Result<RoleAssignment, GraphError>> + Send + 'static {
        let url = self.url_with_query(
            &["roleManagement", "directory", "roleAssignments"],
            &[(
                "$select",
                "id,principalId,roleDefinitionId,directoryScopeId",
            )],
        );
        self.items(self.listing(
            url,
            RequestClass::ReadList,
            "/roleManagement/directory/roleAssignments",
        ))
    }

    /// Directory audit events of one activity since `since` (`Enable
    /// account`: who a person re-enabled). The audit budget is 5 requests per
    /// 10 s, so a scan asks once, not per user.
    pub fn directory_audits_of_activity(
        &self,
        activity: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> impl Stream<Item = Result<DirectoryAudit, GraphError>> + Send + 'static {
        let filter = format!(
            "activityDisplayName eq {} and activityDateTime ge {}",
            odata_quote(activity),
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let url = self.url_with_query(&["auditLogs", "directoryAudits"], &[("$filter", &filter)]);
        self.items(self.listing(
            url,
            RequestClass::DirectoryAudit,
            "/auditLogs/directoryAudits",
        ))
    }

    /// Directory audit events that target an object (GDPR export).
    pub fn directory_audits_for_target(
        &self,
        target_id: &str,
    ) -> impl Stream<Item = Result<DirectoryAudit, GraphError>> + Send + 'static {
        let filter = format!("targetResources/any(t:t/id eq {})", odata_quote(target_id));
        let url = self.url_with_query(&["auditLogs", "directoryAudits"], &[("$filter", &filter)]);
        self.items(self.listing(
            url,
            RequestClass::DirectoryAudit,
            "/auditLogs/directoryAudits",
        ))
    }

    /// `directorySizeQuota` of the tenant (`GET /organization?$select=id,directorySizeQuota`).
    pub async fn directory_quota(&self) -> Result<Option<DirectorySizeQuota>, GraphError> {
        let url = self.url_with_query(&["organization"], &[("$select", "id,directorySizeQuota")]);
        let page: Page<Organization> = self
            .get_json(url, RequestClass::ReadOne, "/organization")
            .await?;
        Ok(page.value.into_iter().find_map(|o| o.directory_size_quota))
    }

    /// `POST /users/{from}/sendMail` (not saved to Sent Items).
    pub async fn send_mail(&self, from: &str, message: &MailMessage) -> Result<(), GraphError> {
        self.write(
            Method::POST,
            self.url(&["users", from, "sendMail"]),
            Some(&serde_json::json!({ "message": message, "saveToSentItems": false })),
            RequestClass::Write,
            "/users/{id}/sendMail",
        )
        .await
        .map(|_| ())
    }
}
