//! The export: `{"user": {...}, "auditEvents": [...], "dormantRecords": [...], "exportedAt"}`.
//!
//! "Every attribute" (FACTS, B2C GDPR export): Graph returns only a default
//! set unless properties are named in `$select`, so the documented v1.0 user
//! properties are named, plus every extension attribute registered for
//! users in the tenant (`POST /directoryObjects/getAvailableExtensionProperties`,
//! cached for an hour: it changes when an app registers a new attribute).
//! Directory audit events come from
//! `auditLogs/directoryAudits?$filter=targetResources/any(t:t/id eq '{id}')`
//! (B2C keeps 7 days of them), dormant's own records from the subject's
//! index in its audit log (`dormant-audit/by-user/{id}.jsonl`): one blob,
//! however many years of log there are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::TryStreamExt as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::graph::{GraphClient, GraphError, RequestClass, odata_quote};
use crate::ids::ObjectId;
use crate::store::StoreError;
use crate::store::audit::AuditLog;

/// Documented `user` properties of Graph v1.0 that `$select` can return.
/// `signInActivity` needs Entra ID P1 and AuditLog.Read.All; when the tenant
/// refuses it the export is retried without it.
pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "accountEnabled",
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "authorizationInfo",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "customSecurityAttributes",
    "deletedDateTime",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeLeaveDateTime",
    "employeeId",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "givenName",
    "identities",
    "imAddresses",
    "isResourceAccount",
    "jobTitle",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "provisionedPlans",
    "proxyAddresses",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "showInAddressList",
    "signInSessionsValidFromDateTime",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
    "signInActivity",
];

const EXTENSIONS_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtensionProperty {
    name: String,
    #[serde(default)]
    target_objects: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ExtensionList {
    #[serde(default)]
    value: Vec<ExtensionProperty>,
}

/// The tenant's user extension attribute names, cached.
#[derive(Debug, Default)]
pub struct ExtensionCache {
    cached: Mutex<Option<(Instant, Vec<String>)>>,
}

impl ExtensionCache {
    pub async fn user_extensions(&self, graph: &GraphClient) -> Result<Vec<String>, GraphError> {
        if let Ok(guard) = self.cached.lock()
            && let Some((at, names)) = guard.as_ref()
            && at.elapsed() < EXTENSIONS_TTL
        {
            return Ok(names.clone());
        }
        let url = graph.url(&["directoryObjects", "getAvailableExtensionProperties"]);
        let answer: ExtensionList = graph
            .write(
                Method::POST,
                url,
                Some(&json!({"isSyncedFromOnPremises": false})),
                RequestClass::ReadList,
                "/directoryObjects/getAvailableExtensionProperties",
            )
            .await?
            .json()?;
        let names: Vec<String> = answer
            .value
            .into_iter()
            .filter(|p| {
                p.target_objects
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("user"))
            })
            // Names go into a URL: keep only what an extension name can be.
            .filter(|p| {
                p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(|p| p.name)
            .collect();
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((Instant::now(), names.clone()));
        }
        Ok(names)
    }
}

/// Builds the export document of `subject`.
pub async fn export(
    graph: &GraphClient,
    extensions: &ExtensionCache,
    audit: &AuditLog,
    subject: &ObjectId,
) -> Result<Value, ExportError> {
    let extension_names = extensions.user_extensions(graph).await?;
    let user = match user_document(graph, subject, &extension_names, true).await {
        Err(GraphError::Permanent { status: 403, .. }) => {
            // signInActivity needs a premium licence and AuditLog.Read.All.
            user_document(graph, subject, &extension_names, false).await?
        }
        other => other?,
    };
    let filter = format!(
        "targetResources/any(t:t/id eq {})",
        odata_quote(subject.as_str())
    );
    let url = graph.url_with_query(&["auditLogs", "directoryAudits"], &[("$filter", &filter)]);
    let listing = graph.listing(
        url,
        RequestClass::DirectoryAudit,
        "/auditLogs/directoryAudits",
    );
    let audit_events: Vec<Value> = graph.items::<Value>(listing).try_collect().await?;
    let own: Vec<Value> = audit
        .subject_records(subject)
        .await?
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    Ok(json!({
        "user": user,
        "auditEvents": audit_events,
        "dormantRecords": own,
        "exportedAt": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}

async fn user_document(
    graph: &GraphClient,
    subject: &ObjectId,
    extensions: &[String],
    with_sign_in: bool,
) -> Result<Value, GraphError> {
    let select: Vec<&str> = USER_PROPERTIES
        .iter()
        .copied()
        .filter(|p| with_sign_in || *p != "signInActivity")
        .chain(extensions.iter().map(String::as_str))
        .collect();
    let url = graph.url_with_query(
        &["users", subject.as_str()],
        &[("$select", &select.join(","))],
    );
    graph
        .get_json(url, RequestClass::ReadOne, "/users/{id}")
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
