//! Typed Graph resources: only what dormant reads or writes, every field
//! optional with `#[serde(default)]` because Graph omits what was not
//! `$select`ed and what it does not know (a user who never signed in has no
//! `signInActivity` at all: that user is *unknown*, never *inactive*).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// `microsoft.graph.user`. Unknown properties (extension attributes, the rest
/// of a full read for a GDPR export) are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub other_mails: Vec<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub user_type: Option<UserType>,
    pub account_enabled: Option<bool>,
    pub created_date_time: Option<DateTime<Utc>>,
    pub creation_type: Option<String>,
    pub external_user_state: Option<ExternalUserState>,
    pub external_user_state_change_date_time: Option<DateTime<Utc>>,
    pub on_premises_sync_enabled: Option<bool>,
    pub sign_in_activity: Option<SignInActivity>,
    pub identities: Vec<ObjectIdentity>,
    pub assigned_licenses: Vec<AssignedLicense>,
    pub license_assignment_states: Vec<LicenseAssignmentState>,
    /// Present when `$expand=manager` was asked for.
    pub manager: Option<DirectoryObject>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `userType`. An unknown value fails the record (see [`UserRecord`]): a user
/// dormant cannot place as member or guest is not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserType {
    Member,
    Guest,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "Member",
            Self::Guest => "Guest",
        }
    }
}

/// `externalUserState` of an invited user. Typed for the same reason: an
/// accepted invitation proves a sign-in, so an unknown state must not be
/// read as "not accepted".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalUserState {
    PendingAcceptance,
    Accepted,
}

/// One item of a `GET /users` page. Graph documents collections as never
/// `null` and dates as ISO 8601, but one odd record must never fail a scan
/// of a million users: a record that does not decode is kept as
/// [`UserRecord::Unreadable`], with what could be read of it, and judged
/// `unknown`.
#[derive(Debug, Clone, PartialEq)]
pub enum UserRecord {
    User(Box<User>),
    Unreadable(UnreadableUser),
}

/// What could be read of a record that does not decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadableUser {
    pub id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    /// Where decoding failed (a property path such as `assignedLicenses`),
    /// never the value found there.
    pub path: String,
}

impl UnreadableUser {
    /// A user with only what could be read, for the report row.
    pub fn as_user(&self) -> User {
        User {
            id: self.id.clone().unwrap_or_default(),
            user_principal_name: self.user_principal_name.clone(),
            display_name: self.display_name.clone(),
            ..User::default()
        }
    }
}

impl UserRecord {
    /// Decodes one user, keeping an odd record instead of failing.
    pub fn from_json(text: &str) -> Self {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, User>(&mut de) {
            Ok(user) => Self::User(Box::new(user)),
            Err(e) => {
                let path = e.path().to_string();
                let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                let text_of = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_owned);
                Self::Unreadable(UnreadableUser {
                    id: text_of("id"),
                    user_principal_name: text_of("userPrincipalName"),
                    display_name: text_of("displayName"),
                    path,
                })
            }
        }
    }
}

impl<'de> Deserialize<'de> for UserRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The raw text first (cheap: only validated, not parsed), so a
        // record that does not fit `User` fails alone, not its whole page.
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(Self::from_json(raw.get()))
    }
}

/// `signInActivity`: absent for users who never signed in; lags up to 24 h.
/// Dates before 2000 (Graph's `0001-01-01T00:00:00Z` "no value" sentinel)
/// read as `None`: a placeholder must never look like a very old sign-in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SignInActivity {
    /// Last interactive sign-in, **successful or failed** (kept since 2020-04).
    #[serde(deserialize_with = "real_date")]
    pub last_sign_in_date_time: Option<DateTime<Utc>>,
    pub last_sign_in_request_id: Option<String>,
    /// Last non-interactive sign-in, successful or failed (since 2020-05).
    #[serde(deserialize_with = "real_date")]
    pub last_non_interactive_sign_in_date_time: Option<DateTime<Utc>>,
    pub last_non_interactive_sign_in_request_id: Option<String>,
    /// Last successful sign-in of any kind (since 2023-12-01, not back-filled).
    #[serde(deserialize_with = "real_date")]
    pub last_successful_sign_in_date_time: Option<DateTime<Utc>>,
    pub last_successful_sign_in_request_id: Option<String>,
}

fn real_date<'de, D>(d: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use chrono::Datelike;
    let v: Option<DateTime<Utc>> = Option::deserialize(d)?;
    Ok(v.filter(|t| t.year() >= 2000))
}

/// `objectIdentity` (B2C local accounts, federated and guest identities).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectIdentity {
    /// `emailAddress`, `userName`, `federated`, `userPrincipalName`.
    pub sign_in_type: Option<String>,
    /// `ExternalAzureAD` marks a guest whose home is another (maybe viral) Entra tenant.
    pub issuer: Option<String>,
    pub issuer_assigned_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AssignedLicense {
    pub sku_id: String,
    pub disabled_plans: Vec<String>,
}

/// `licenseAssignmentState`: `assignedByGroup` set = inherited from a group,
/// which `assignLicense` cannot remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LicenseAssignmentState {
    pub sku_id: Option<String>,
    pub assigned_by_group: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub disabled_plans: Vec<String>,
    pub last_updated_date_time: Option<DateTime<Utc>>,
}

/// A `directoryObject` (a manager, a group member): `@odata.type` tells which.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DirectoryObject {
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    pub id: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub user_principal_name: Option<String>,
    /// Groups only: whether directory roles can be assigned to the group.
    pub is_assignable_to_role: Option<bool>,
}

/// `mailboxSettings`, only the part dormant needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MailboxSettings {
    /// `user`, `shared`, `room`, `equipment`, `linked`, `others`, `unknownFutureValue`.
    pub user_purpose: Option<String>,
    pub time_zone: Option<String>,
}

/// `subscribedSku`: maps `skuId` to the readable `skuPartNumber`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SubscribedSku {
    pub id: Option<String>,
    pub sku_id: String,
    pub sku_part_number: String,
    pub applies_to: Option<String>,
    pub capability_status: Option<String>,
    pub consumed_units: i64,
    pub prepaid_units: PrepaidUnits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PrepaidUnits {
    pub enabled: i64,
    pub locked_out: i64,
    pub suspended: i64,
    pub warning: i64,
}

/// `directoryAudit` (kept 7 days in B2C, 30 in P1/P2 tenants).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DirectoryAudit {
    pub id: String,
    pub category: Option<String>,
    pub correlation_id: Option<String>,
    pub result: Option<String>,
    pub result_reason: Option<String>,
    pub activity_display_name: Option<String>,
    pub activity_date_time: Option<DateTime<Utc>>,
    pub logged_by_service: Option<String>,
    pub operation_type: Option<String>,
    pub initiated_by: AuditActivityInitiator,
    pub target_resources: Vec<TargetResource>,
    pub additional_details: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuditActivityInitiator {
    pub app: Option<AppIdentity>,
    pub user: Option<UserIdentity>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AppIdentity {
    pub app_id: Option<String>,
    pub display_name: Option<String>,
    pub service_principal_id: Option<String>,
    pub service_principal_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UserIdentity {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub ip_address: Option<String>,
    pub user_principal_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TargetResource {
    pub id: Option<String>,
    pub display_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user_principal_name: Option<String>,
    pub group_type: Option<String>,
    pub modified_properties: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// An item of `/directory/deletedItems` (a soft-deleted user, kept 30 days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeletedItem {
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    pub id: String,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub deleted_date_time: Option<DateTime<Utc>>,
}

/// `organization`, for the directory quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Organization {
    pub id: String,
    pub display_name: Option<String>,
    pub directory_size_quota: Option<DirectorySizeQuota>,
}

/// `directorySizeQuota`: objects used / allowed (alert above 90 %).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectorySizeQuota {
    pub used: i64,
    pub total: i64,
}

/// `POST /invitations` body for a redemption reset (keeps object id, groups
/// and app assignments).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvitationRequest {
    pub invited_user_email_address: String,
    pub invite_redirect_url: String,
    pub send_invitation_message: bool,
    pub reset_redemption: bool,
    pub invited_user: InvitedUserRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitedUserRef {
    pub id: String,
}

/// `invitation` as Graph answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Invitation {
    pub id: Option<String>,
    pub invited_user_display_name: Option<String>,
    pub invited_user_email_address: Option<String>,
    pub invite_redeem_url: Option<String>,
    pub invite_redirect_url: Option<String>,
    pub send_invitation_message: Option<bool>,
    pub reset_redemption: Option<bool>,
    pub status: Option<String>,
    pub invited_user_type: Option<String>,
    pub invited_user: Option<DirectoryObject>,
}

/// `adminReportSettings`: whether usage reports conceal user names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReportSettings {
    pub display_concealed_names: bool,
}

/// `unifiedRoleAssignment` (directory roles of a principal).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleAssignment {
    pub id: String,
    pub role_definition_id: Option<String>,
    pub principal_id: Option<String>,
    pub directory_scope_id: Option<String>,
}

/// The answer of `GET {authority}/common/userrealm?user=…&api-version=2.1`
/// (undocumented; per domain). `IsViral: true` = an unmanaged ("viral") tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRealm {
    #[serde(rename = "NameSpaceType")]
    pub namespace_type: Option<String>,
    #[serde(rename = "DomainName")]
    pub domain_name: Option<String>,
    #[serde(rename = "IsViral")]
    pub is_viral: Option<bool>,
    #[serde(rename = "FederationBrandName")]
    pub federation_brand_name: Option<String>,
    #[serde(rename = "CloudInstanceName")]
    pub cloud_instance_name: Option<String>,
}

/// A `message` for `sendMail` (plain text or HTML body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailMessage {
    pub subject: String,
    pub body: ItemBody,
    pub to_recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    /// `text` or `html`.
    pub content_type: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub email_address: EmailAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress {
    pub address: String,
}

/// One row of `getOffice365ActiveUserDetail`. Dates are `YYYY-MM-DD`;
/// `None` = never (the CSV cell is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveUserDetail {
    pub report_refresh_date: Option<NaiveDate>,
    /// A hex hash instead of the UPN while names are concealed.
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub is_deleted: bool,
    pub deleted_date: Option<NaiveDate>,
    pub has_exchange_license: bool,
    pub has_onedrive_license: bool,
    pub has_sharepoint_license: bool,
    pub has_skype_license: bool,
    pub has_yammer_license: bool,
    pub has_teams_license: bool,
    pub exchange_last_activity: Option<NaiveDate>,
    pub onedrive_last_activity: Option<NaiveDate>,
    pub sharepoint_last_activity: Option<NaiveDate>,
    pub skype_last_activity: Option<NaiveDate>,
    pub yammer_last_activity: Option<NaiveDate>,
    pub teams_last_activity: Option<NaiveDate>,
    pub exchange_license_assign_date: Option<NaiveDate>,
    pub onedrive_license_assign_date: Option<NaiveDate>,
    pub sharepoint_license_assign_date: Option<NaiveDate>,
    pub skype_license_assign_date: Option<NaiveDate>,
    pub yammer_license_assign_date: Option<NaiveDate>,
    pub teams_license_assign_date: Option<NaiveDate>,
    /// `Assigned Products`, split on `+`.
    pub assigned_products: Vec<String>,
}

impl ActiveUserDetail {
    /// The most recent activity over all workloads, and the workload's name.
    pub fn last_activity(&self) -> Option<(NaiveDate, &'static str)> {
        [
            (self.exchange_last_activity, "exchange"),
            (self.onedrive_last_activity, "onedrive"),
            (self.sharepoint_last_activity, "sharepoint"),
            (self.skype_last_activity, "skype"),
            (self.yammer_last_activity, "yammer"),
            (self.teams_last_activity, "teams"),
        ]
        .into_iter()
        .filter_map(|(d, s)| d.map(|d| (d, s)))
        .max_by_key(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Page;

    fn roundtrip<T>(json: &str) -> T
    where
        T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
    {
        let a: T = serde_json::from_str(json).expect("fixture parses");
        let again: T = serde_json::from_str(&serde_json::to_string(&a).expect("serializes"))
            .expect("re-parses");
        assert_eq!(a, again);
        a
    }

    #[test]
    fn users_page_with_sign_in_activity() {
        let page: Page<User> =
            serde_json::from_str(include_str!("fixtures/users-page.json")).expect("parses");
        assert_eq!(page.value.len(), 3);
        let a = &page.value[0];
        let s = a.sign_in_activity.as_ref().expect("has signInActivity");
        assert_eq!(
            s.last_sign_in_date_time.map(|d| d.to_rfc3339()),
            Some("2021-01-29T16:27:20+00:00".to_string())
        );
        assert!(s.last_successful_sign_in_date_time.is_some());
        assert!(s.last_non_interactive_sign_in_request_id.is_some());
        // Never signed in: no signInActivity at all (unknown, not inactive).
        assert!(page.value[2].sign_in_activity.is_none());
        assert!(page.next_link.is_some());
        for u in &page.value {
            let _ = roundtrip::<User>(&serde_json::to_string(u).expect("ser"));
        }
    }

    #[test]
    fn sentinel_sign_in_dates_read_as_none() {
        let s: SignInActivity = serde_json::from_str(
            r#"{"lastSignInDateTime":"0001-01-01T00:00:00Z","lastNonInteractiveSignInDateTime":null,"lastSuccessfulSignInDateTime":"2024-01-02T03:04:05Z"}"#,
        )
        .expect("parses");
        assert_eq!(s.last_sign_in_date_time, None);
        assert_eq!(s.last_non_interactive_sign_in_date_time, None);
        assert!(s.last_successful_sign_in_date_time.is_some());
    }

    #[test]
    fn full_user_with_licenses_identities_and_extensions() {
        let u: User = roundtrip(include_str!("fixtures/user-full.json"));
        assert_eq!(u.user_type, Some(UserType::Guest));
        assert_eq!(u.external_user_state, Some(ExternalUserState::Accepted));
        assert_eq!(u.identities[0].issuer.as_deref(), Some("ExternalAzureAD"));
        assert_eq!(u.assigned_licenses.len(), 1);
        let state = &u.license_assignment_states[1];
        assert!(state.assigned_by_group.is_some());
        assert_eq!(state.state.as_deref(), Some("Error"));
        assert_eq!(state.error.as_deref(), Some("CountViolation"));
        assert_eq!(u.on_premises_sync_enabled, Some(true));
        assert_eq!(
            u.manager.as_ref().map(|m| m.id.as_str()),
            Some("6b0d8a7c-9f1b-4d4e-8e3a-2b1f5d9c0a11")
        );
        assert!(u.extra.contains_key("extension_b2c1234_loyaltyNumber"));
    }

    #[test]
    fn b2c_local_account() {
        let u: User = roundtrip(include_str!("fixtures/user-b2c.json"));
        assert_eq!(u.creation_type.as_deref(), Some("LocalAccount"));
        assert_eq!(u.identities.len(), 2);
        assert_eq!(
            u.identities[0].sign_in_type.as_deref(),
            Some("emailAddress")
        );
    }

    #[test]
    fn subscribed_skus() {
        let p: Page<SubscribedSku> =
            serde_json::from_str(include_str!("fixtures/subscribed-skus.json")).expect("parses");
        assert_eq!(p.value[0].sku_part_number, "AAD_PREMIUM");
        assert_eq!(p.value[0].prepaid_units.enabled, 2);
        assert_eq!(p.value[1].consumed_units, 14);
    }

    #[test]
    fn directory_audits() {
        let p: Page<DirectoryAudit> =
            serde_json::from_str(include_str!("fixtures/directory-audits.json")).expect("parses");
        let a = &p.value[0];
        assert_eq!(a.activity_display_name.as_deref(), Some("Update user"));
        assert!(a.activity_date_time.is_some());
        assert_eq!(a.target_resources[0].kind.as_deref(), Some("User"));
        assert!(a.initiated_by.user.is_some() || a.initiated_by.app.is_some());
    }

    #[test]
    fn small_resources() {
        let m: MailboxSettings = roundtrip(include_str!("fixtures/mailbox-settings.json"));
        assert_eq!(m.user_purpose.as_deref(), Some("shared"));
        let o: Page<Organization> =
            serde_json::from_str(include_str!("fixtures/organization.json")).expect("parses");
        assert_eq!(
            o.value[0].directory_size_quota,
            Some(DirectorySizeQuota {
                used: 8,
                total: 300_000
            })
        );
        let r: ReportSettings = roundtrip(
            r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#admin/reportSettings/$entity","displayConcealedNames":true}"#,
        );
        assert!(r.display_concealed_names);
        let d: DeletedItem = roundtrip(include_str!("fixtures/deleted-user.json"));
        assert!(d.deleted_date_time.is_some());
        let i: Invitation = roundtrip(include_str!("fixtures/invitation.json"));
        assert_eq!(i.reset_redemption, Some(true));
        let realm: UserRealm = roundtrip(include_str!("fixtures/userrealm.json"));
        assert_eq!(realm.is_viral, Some(true));
        let mgr: DirectoryObject = roundtrip(include_str!("fixtures/manager.json"));
        assert_eq!(mgr.odata_type.as_deref(), Some("#microsoft.graph.user"));
    }

    #[test]
    fn invitation_request_serializes_to_the_documented_shape() {
        let r = InvitationRequest {
            invited_user_email_address: "a@fabrikam.com".into(),
            invite_redirect_url: "https://myapps.microsoft.com".into(),
            send_invitation_message: false,
            reset_redemption: true,
            invited_user: InvitedUserRef { id: "u1".into() },
        };
        let v = serde_json::to_value(&r).expect("ser");
        assert_eq!(v["invitedUser"]["id"], "u1");
        assert_eq!(v["resetRedemption"], true);
        assert_eq!(v["invitedUserEmailAddress"], "a@fabrikam.com");
    }

    #[test]
    fn last_activity_takes_the_newest_workload() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let row = ActiveUserDetail {
            exchange_last_activity: d("2024-01-02"),
            teams_last_activity: d("2024-03-01"),
            ..Default::default()
        };
        assert_eq!(
            row.last_activity(),
            Some((NaiveDate::from_ymd_opt(2024, 3, 1).expect("date"), "teams"))
        );
        assert_eq!(ActiveUserDetail::default().last_activity(), None);
    }
}
