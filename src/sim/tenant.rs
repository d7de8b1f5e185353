//! The seeded tenant: users derived from `(seed, index)` plus in-place mutations.
//!
//! One [`UserRec`] is ~70 bytes; names, UPNs and ids are re-derived on demand, so
//! a 1,000,000-user tenant stays well under 100 MB. Everything time-related is
//! stored as Unix seconds relative to the clock's start ("T0").

use std::io::Write;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::ids::{self, Rng};

/// Workforce (Entra ID) or Azure AD B2C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TenantKind {
    Workforce,
    B2c,
}

impl TenantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKind::Workforce => "workforce",
            TenantKind::B2c => "b2c",
        }
    }
}

/// What a generated user is, which drives every derived attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Archetype {
    Active,
    Inactive,
    NeverSignedInOld,
    NeverSignedInNew,
    NoSignInData,
    Attacked,
    Executive,
    Service,
    Shared,
    Room,
    Privileged,
    BreakGlass,
    GuestPending,
    GuestAccepted,
    GuestViral,
    B2cLocal,
    B2cUserName,
    B2cSocial,
    B2cAdmin,
}

impl Archetype {
    pub fn name(self) -> &'static str {
        match self {
            Archetype::Active => "active",
            Archetype::Inactive => "inactive",
            Archetype::NeverSignedInOld => "never-signed-in-old",
            Archetype::NeverSignedInNew => "never-signed-in-new",
            Archetype::NoSignInData => "no-signin-data",
            Archetype::Attacked => "failed-signins-only",
            Archetype::Executive => "executive",
            Archetype::Service => "service-account",
            Archetype::Shared => "shared-mailbox",
            Archetype::Room => "room-mailbox",
            Archetype::Privileged => "privileged-role",
            Archetype::BreakGlass => "break-glass",
            Archetype::GuestPending => "guest-pending",
            Archetype::GuestAccepted => "guest-accepted",
            Archetype::GuestViral => "guest-viral",
            Archetype::B2cLocal => "b2c-local-email",
            Archetype::B2cUserName => "b2c-local-username",
            Archetype::B2cSocial => "b2c-social",
            Archetype::B2cAdmin => "b2c-admin",
        }
    }
    pub fn is_guest(self) -> bool {
        matches!(
            self,
            Archetype::GuestPending | Archetype::GuestAccepted | Archetype::GuestViral
        )
    }
}

pub const F_ENABLED: u16 = 1;
pub const F_SYNCED: u16 = 1 << 1;
pub const F_PENDING: u16 = 1 << 3;
pub const F_PURGED: u16 = 1 << 4;
pub const F_REENABLED_BY_PERSON: u16 = 1 << 5;
pub const F_EXCLUDED_GROUP: u16 = 1 << 6;
pub const F_CREATED_LATER: u16 = 1 << 7;
/// The user's role is PIM-eligible, not active: it shows in
/// `roleEligibilityScheduleInstances`, not in `roleAssignments` or
/// `memberOf`, and Graph's sensitive-action checks do not see it.
pub const F_ELIGIBLE: u16 = 1 << 8;

/// An odd record Graph sends for one user (seen in the field; set through
/// `/_sim/users/{id}/quirk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quirk {
    /// `signInActivity` with every date `0001-01-01T00:00:00Z`.
    PlaceholderSignIn,
    /// `signInActivity` with every date `null`.
    NullSignIn,
    /// `assignedLicenses: null` (documented as a collection, never null).
    NullCollection,
    /// `createdDateTime` that does not parse.
    BadDate,
    /// `userType` dormant does not know.
    UnknownUserType,
}

/// Mailbox kinds as `mailboxSettings.userPurpose` names them.
pub const PURPOSES: [&str; 5] = ["user", "shared", "room", "equipment", "none"];
pub const P_USER: u8 = 0;
pub const P_SHARED: u8 = 1;
pub const P_ROOM: u8 = 2;
pub const P_NONE: u8 = 4;

/// A SKU the tenant subscribes to: real skuIds and part numbers.
pub struct Sku {
    pub id: &'static str,
    pub part: &'static str,
    pub prepaid: u32,
    /// Includes Exchange, OneDrive, SharePoint, Skype, Yammer, Teams.
    pub office: bool,
}

pub const SKUS: [Sku; 6] = [
    Sku {
        id: "6fd2c87f-b296-42f0-b197-1e91e994b900",
        part: "ENTERPRISEPACK",
        prepaid: 2_000_000,
        office: true,
    },
    Sku {
        id: "06ebc4ee-1bb5-47dd-8120-11324bc54e06",
        part: "SPE_E5",
        prepaid: 100_000,
        office: true,
    },
    Sku {
        id: "66b55226-6b4f-492c-910c-a3b7a3c9d993",
        part: "SPE_F1",
        prepaid: 500_000,
        office: true,
    },
    Sku {
        id: "efccb6f7-5641-4e0e-bd10-b4976e1bf68e",
        part: "EMS",
        prepaid: 2_000_000,
        office: false,
    },
    Sku {
        id: "c5928f49-12ba-48f7-ada3-0d743a3601d5",
        part: "VISIOCLIENT",
        prepaid: 50_000,
        office: false,
    },
    Sku {
        id: "078d2b04-f1bd-4111-bbd4-b4b1b354cef4",
        part: "AAD_PREMIUM",
        prepaid: 2_000_000,
        office: false,
    },
];
pub const L_E3: u8 = 1;
pub const L_E5: u8 = 1 << 1;
pub const L_F3: u8 = 1 << 2;
pub const L_EMS: u8 = 1 << 3;
pub const L_VISIO: u8 = 1 << 4;
pub const L_P1: u8 = 1 << 5;
pub const OFFICE_MASK: u8 = L_E3 | L_E5 | L_F3;

/// Built-in directory roles (real role template ids).
pub const ROLES: [(&str, &str); 4] = [
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
    ),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader"),
];

/// Fixed groups of the tenant.
pub const GROUPS: [&str; 5] = [
    "All Employees",
    "Licensing - Office 365 E3",
    "Dormant Exclusions",
    "Service Accounts",
    "Executives",
];
pub const G_ALL: usize = 0;
pub const G_LICENSING: usize = 1;
pub const G_EXCLUSIONS: usize = 2;
pub const G_SERVICE: usize = 3;
pub const G_EXECS: usize = 4;

/// Guest home domains and whether their realm is viral (unmanaged).
pub const GUEST_DOMAINS: [(&str, bool); 6] = [
    ("fabrikam.com", false),
    ("northwindtraders.com", false),
    ("tailspintoys.com", false),
    ("wingtiptoys.com", false),
    ("adatumstudents.edu", true),
    ("litwarefreelance.com", true),
];

const FIRST: [&str; 52] = [
    "adele",
    "alex",
    "ana",
    "bianca",
    "brian",
    "carlos",
    "chloe",
    "dmitri",
    "diego",
    "elena",
    "emeka",
    "fatima",
    "felix",
    "grace",
    "gustav",
    "hana",
    "henrik",
    "ines",
    "isaac",
    "jasmine",
    "jonas",
    "kenji",
    "kyra",
    "lars",
    "leila",
    "mateo",
    "mia",
    "nadia",
    "nikolai",
    "olga",
    "omar",
    "priya",
    "pablo",
    "quinn",
    "quentin",
    "rosa",
    "rahul",
    "sofia",
    "sven",
    "tariq",
    "tessa",
    "ulla",
    "umar",
    "valentina",
    "victor",
    "wei",
    "wanda",
    "xavier",
    "xenia",
    "yara",
    "yusuf",
    "zoe",
];
const LAST: [&str; 40] = [
    "vance",
    "wilber",
    "o'brien",
    "nakamura",
    "garcia",
    "muller",
    "kowalski",
    "okafor",
    "haddad",
    "johansson",
    "rossi",
    "dubois",
    "fernandez",
    "ivanova",
    "kim",
    "nguyen",
    "patel",
    "smith",
    "zhang",
    "andersen",
    "bauer",
    "costa",
    "de_vries",
    "eriksen",
    "friedman",
    "gallo",
    "hernandez",
    "ito",
    "jensen",
    "khan",
    "lopez",
    "moreau",
    "novak",
    "olsen",
    "peters",
    "quist",
    "reyes",
    "schmidt",
    "tanaka",
    "weber",
];
const DEPARTMENTS: [&str; 8] = [
    "Sales",
    "Marketing",
    "Finance",
    "Engineering",
    "Operations",
    "Legal",
    "HR",
    "Support",
];
const TITLES: [&str; 8] = [
    "Account Manager",
    "Engineer",
    "Analyst",
    "Consultant",
    "Designer",
    "Specialist",
    "Coordinator",
    "Team Lead",
];
const EXEC_TITLES: [&str; 6] = [
    "Chief Executive Officer",
    "Chief Financial Officer",
    "Chief Technology Officer",
    "Vice President Sales",
    "Senior Vice President Operations",
    "Chief Operating Officer",
];
const SERVICES: [&str; 8] = [
    "backup",
    "scanner",
    "sql",
    "crm-sync",
    "jenkins",
    "printer",
    "teams-rooms",
    "hr-feed",
];
const SHARED: [&str; 6] = ["info", "support", "billing", "careers", "press", "helpdesk"];
const ROOMS: [&str; 4] = ["conf-amsterdam", "conf-boston", "conf-cairo", "conf-delhi"];

/// Successful sign-ins before this moment are not in `lastSuccessfulSignInDateTime`
/// (the property exists since 2023-12-01 and was not back-filled).
pub fn success_epoch() -> i64 {
    Utc.with_ymd_and_hms(2023, 12, 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp())
        .unwrap_or(0)
}
/// `lastSignInDateTime` has data since April 2020.
pub fn interactive_epoch() -> i64 {
    Utc.with_ymd_and_hms(2020, 4, 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp())
        .unwrap_or(0)
}
/// `lastNonInteractiveSignInDateTime` has data since May 2020.
pub fn noninteractive_epoch() -> i64 {
    Utc.with_ymd_and_hms(2020, 5, 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp())
        .unwrap_or(0)
}

const DAY: i64 = 86_400;

/// One user: compact, mutable in place.
#[derive(Clone, Debug)]
pub struct UserRec {
    pub created: i64,
    /// Last interactive sign-in attempt, successful or failed (0 = none).
    pub last_interactive: i64,
    /// Last non-interactive sign-in attempt (0 = none).
    pub last_noninteractive: i64,
    /// Last successful sign-in of any kind, the real one (0 = none). Graph only
    /// shows it when it is after 2023-12-01.
    pub last_success: i64,
    /// Usage-report last activity per service (Unix seconds, 0 = never):
    /// Exchange, OneDrive, SharePoint, Teams.
    pub usage: [i64; 4],
    pub deleted_at: i64,
    pub state_changed: i64,
    /// Manager index + 1 (0 = none).
    pub manager: u32,
    pub name_key: u32,
    pub arch: Archetype,
    pub flags: u16,
    pub licenses: u8,
    pub group_licenses: u8,
    pub purpose: u8,
    /// Index into ROLES + 1 (0 = none).
    pub role: u8,
    pub dept: u8,
}

impl UserRec {
    pub fn enabled(&self) -> bool {
        self.flags & F_ENABLED != 0
    }
    /// Holds a directory role actively (not only PIM-eligible).
    pub fn active_role(&self) -> bool {
        self.role > 0 && self.flags & F_ELIGIBLE == 0
    }
    pub fn is_deleted(&self) -> bool {
        self.deleted_at != 0
    }
    pub fn all_licenses(&self) -> u8 {
        self.licenses | self.group_licenses
    }
    pub fn has_mailbox(&self) -> bool {
        match self.purpose {
            P_SHARED | P_ROOM => true,
            P_USER => self.all_licenses() & OFFICE_MASK != 0,
            _ => false,
        }
    }
}

/// One directory audit event (kept 30 days; 7 in B2C).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    pub activity: &'static str,
    pub target: u32,
    /// Index of the person who did it, or `None` for an app.
    pub by_person: Option<u32>,
    /// The app that did it when no person did: `None` is dormant's own.
    pub by_app: Option<String>,
    pub property: &'static str,
    pub new_value: String,
}

/// The whole tenant.
pub struct Tenant {
    pub kind: TenantKind,
    pub seed: u64,
    pub t0: i64,
    pub tenant_id: String,
    pub domain: String,
    /// B2C: the b2c-extensions-app id without dashes (extension attribute prefix).
    pub ext_app: String,
    pub users: Vec<UserRec>,
    pub audits: Vec<AuditEvent>,
    /// Invited guests' email addresses, for users created after generation.
    pub invited_mail: std::collections::HashMap<u32, String>,
    /// Sponsors set by hand (`/_sim/users/{id}/sponsor`), over the
    /// generated ones ([`Tenant::sponsor_of`]); `None` = no sponsor.
    pub sponsors: std::collections::HashMap<u32, Option<u32>>,
    /// UPNs chosen at seeding ([`Tenant::add_users_with_upns`]), by index.
    pub seeded_upn: std::collections::HashMap<u32, String>,
    /// Odd records, by index.
    pub quirks: std::collections::HashMap<u32, Quirk>,
    /// Unmanaged home domains added by [`Tenant::add_viral_guests`]
    /// (all viral), and their guests' domain, by user index.
    pub viral_domains: Vec<String>,
    pub viral_domain_of: std::collections::HashMap<u32, u32>,
    pub id_key: u64,
    pub upn_key: u64,
    /// The first [`UPN_HEAD`] bytes of every UPN, ASCII-lowercased and
    /// zero-padded. A scan pages thousands of `startswith(userPrincipalName,…)`
    /// partitions, most of them small or empty; matching each against every
    /// user's formatted UPN made the simulator, not the client, the bottleneck
    /// of a million-user tenant. A UPN never changes once a user exists.
    pub upn_heads: Vec<[u8; UPN_HEAD]>,
}

/// Bytes of each UPN kept in [`Tenant::upn_heads`].
pub const UPN_HEAD: usize = 4;

fn upn_head(upn: &str) -> [u8; UPN_HEAD] {
    let mut head = [0u8; UPN_HEAD];
    for (slot, b) in head.iter_mut().zip(upn.bytes()) {
        *slot = b.to_ascii_lowercase();
    }
    head
}

fn name_parts(key: u32) -> (&'static str, &'static str) {
    let h = ids::mix64(u64::from(key));
    (
        FIRST[(h % FIRST.len() as u64) as usize],
        LAST[((h >> 20) % LAST.len() as u64) as usize],
    )
}

fn capitalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = true;
    for c in s.chars() {
        if up {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        up = c == '\'' || c == '_' || c == '-';
    }
    out.replace('_', " ")
}

impl Tenant {
    /// Generate `n` users for `kind` from `seed`, dated relative to `t0`.
    pub fn generate(kind: TenantKind, n: u32, seed: u64, t0: DateTime<Utc>) -> Tenant {
        let t0s = t0.timestamp();
        let tenant_id = ids::named_guid(seed, "tenant");
        let org = ["contoso", "woodgrove", "fourthcoffee", "relecloud"][(seed % 4) as usize];
        let domain = match kind {
            TenantKind::Workforce => format!("{org}.onmicrosoft.com"),
            TenantKind::B2c => format!("{org}b2c.onmicrosoft.com"),
        };
        let ext_app = ids::named_guid(seed, "b2c-extensions-app").replace('-', "");
        let mut users = Vec::with_capacity(n as usize);
        for i in 0..n {
            users.push(generate_user(kind, seed, t0s, i, n, None));
        }
        let mut t = Tenant {
            kind,
            seed,
            t0: t0s,
            tenant_id,
            domain,
            ext_app,
            users,
            audits: Vec::new(),
            invited_mail: Default::default(),
            sponsors: Default::default(),
            seeded_upn: Default::default(),
            quirks: Default::default(),
            viral_domains: Vec::new(),
            viral_domain_of: Default::default(),
            id_key: ids::hash(&[seed, 0x1d]),
            upn_key: ids::hash(&[seed, 0x0b2c]),
            upn_heads: Vec::new(),
        };
        t.upn_heads = (0..n).map(|i| upn_head(&t.upn(i))).collect();
        t.seed_audits();
        t
    }

    /// Some users were re-enabled by an administrator in the last days: the
    /// audit log shows "Enable account" initiated by a person.
    fn seed_audits(&mut self) {
        let admin = self
            .users
            .iter()
            .position(|u| u.arch == Archetype::Privileged || u.arch == Archetype::B2cAdmin);
        let Some(admin) = admin else { return };
        let retention = self.audit_retention_days();
        for i in 0..self.users.len() {
            if self.users[i].flags & F_REENABLED_BY_PERSON == 0 {
                continue;
            }
            let mut rng = Rng::new(ids::hash(&[self.seed, i as u64, 0xa0d]));
            let at = self.t0 - rng.range(DAY / 2, (retention - 1) * DAY);
            self.push_audit(
                at,
                "Enable account",
                i as u32,
                Some(admin as u32),
                "AccountEnabled",
                "[true]",
            );
            self.push_audit(
                at + 1,
                "Update user",
                i as u32,
                Some(admin as u32),
                "AccountEnabled",
                "[true]",
            );
        }
    }

    pub fn audit_retention_days(&self) -> i64 {
        match self.kind {
            TenantKind::Workforce => 30,
            TenantKind::B2c => 7,
        }
    }

    pub fn push_audit(
        &mut self,
        at: i64,
        activity: &'static str,
        target: u32,
        by_person: Option<u32>,
        property: &'static str,
        new_value: &str,
    ) {
        let id = format!(
            "Directory_{}",
            ids::named_guid(self.seed, &format!("audit-{}-{}", self.audits.len(), at))
                .replace('-', "")
                .to_uppercase()
        );
        self.audits.push(AuditEvent {
            id,
            at,
            activity,
            target,
            by_person,
            by_app: None,
            property,
            new_value: new_value.to_string(),
        });
    }

    /// Object id of user `i`.
    pub fn user_id(&self, i: u32) -> String {
        ids::guid_string(&ids::guid_for(self.id_key, i))
    }

    /// Resolve an object id or a UPN (case-insensitive) to an index.
    pub fn resolve(&self, key: &str) -> Option<u32> {
        if let Some(i) = ids::index_of_guid(self.id_key, key) {
            return ((i as usize) < self.users.len()).then_some(i);
        }
        let key = key.to_ascii_lowercase();
        let (local, _) = key.split_once('@')?;
        let parsed = if self.kind == TenantKind::B2c && local.len() == 36 {
            ids::index_of_guid(self.upn_key, local)
        } else {
            // Guests: `<mail with @ as _>#EXT#`; domains carry no underscore.
            let local = match local.strip_suffix("#ext#") {
                Some(l) => l.rsplit_once('_').map(|x| x.0).unwrap_or(l),
                None => local,
            };
            let digits: String = local
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            let digits: String = digits.chars().rev().collect();
            digits.parse::<u32>().ok()
        };
        if let Some(i) = parsed
            .filter(|i| (*i as usize) < self.users.len() && self.upn(*i).eq_ignore_ascii_case(&key))
        {
            return Some(i);
        }
        // Guests invited after generation and seeded users carry no index
        // in their UPN.
        self.invited_mail
            .keys()
            .chain(self.seeded_upn.keys())
            .copied()
            .find(|i| self.upn(*i).eq_ignore_ascii_case(&key))
    }

    pub fn given_surname(&self, i: u32) -> (String, String) {
        let (f, l) = name_parts(self.users[i as usize].name_key);
        (capitalize(f), capitalize(l))
    }

    pub fn display_name(&self, i: u32) -> String {
        let u = &self.users[i as usize];
        let (f, l) = self.given_surname(i);
        match u.arch {
            Archetype::Service => format!("SVC {}", SERVICES[(u.name_key % 8) as usize]),
            Archetype::Shared => {
                format!("{} mailbox", capitalize(SHARED[(u.name_key % 6) as usize]))
            }
            Archetype::Room => format!("Room {}", capitalize(ROOMS[(u.name_key % 4) as usize])),
            Archetype::BreakGlass => format!("Break Glass {:02}", i),
            _ => format!("{f} {l}"),
        }
    }

    /// The guest's home email, `first.last<i>@domain`.
    pub fn guest_mail(&self, i: u32) -> String {
        if let Some(m) = self.invited_mail.get(&i) {
            return m.clone();
        }
        let u = &self.users[i as usize];
        let (f, l) = name_parts(u.name_key);
        format!("{f}.{l}{i}@{}", self.guest_domain(i))
    }

    pub fn guest_domain(&self, i: u32) -> &str {
        if let Some(k) = self.viral_domain_of.get(&i) {
            return &self.viral_domains[*k as usize];
        }
        if let Some(m) = self.invited_mail.get(&i) {
            let d = m.rsplit('@').next().unwrap_or("");
            return GUEST_DOMAINS
                .iter()
                .find(|(g, _)| *g == d)
                .map(|(g, _)| *g)
                .unwrap_or("outlook.com");
        }
        let u = &self.users[i as usize];
        let h = ids::mix64(u64::from(u.name_key) ^ 0x9e57);
        if u.arch == Archetype::GuestViral {
            GUEST_DOMAINS[4 + (h % 2) as usize].0
        } else {
            GUEST_DOMAINS[(h % 4) as usize].0
        }
    }

    /// The user principal name: only `A–Z a–z 0–9 ' . - _ ! # ^ ~`, never a leading period.
    pub fn upn(&self, i: u32) -> String {
        if let Some(upn) = self.seeded_upn.get(&i) {
            return upn.clone();
        }
        let u = &self.users[i as usize];
        let (f, l) = name_parts(u.name_key);
        let d = &self.domain;
        match u.arch {
            Archetype::B2cLocal | Archetype::B2cUserName | Archetype::B2cSocial => {
                format!("{}@{d}", ids::guid_string(&ids::guid_for(self.upn_key, i)))
            }
            Archetype::Service => format!("svc-{}{i}@{d}", SERVICES[(u.name_key % 8) as usize]),
            Archetype::Shared => format!("{}{i}@{d}", SHARED[(u.name_key % 6) as usize]),
            Archetype::Room => format!("{}{i}@{d}", ROOMS[(u.name_key % 4) as usize]),
            Archetype::BreakGlass => format!("breakglass{i}@{d}"),
            a if a.is_guest() => {
                let mail = self.guest_mail(i).replace('@', "_");
                format!("{mail}#EXT#@{d}")
            }
            _ => format!("{f}.{l}{i}@{d}"),
        }
    }

    pub fn mail(&self, i: u32) -> Option<String> {
        let u = &self.users[i as usize];
        match u.arch {
            a if a.is_guest() => Some(self.guest_mail(i)),
            Archetype::B2cLocal | Archetype::B2cUserName | Archetype::B2cSocial => None,
            Archetype::Service => None,
            _ if u.has_mailbox() || u.purpose == P_USER => {
                let upn = self.upn(i);
                Some(upn)
            }
            _ => None,
        }
    }

    /// B2C sign-in email/user name (local accounts) or social address.
    pub fn b2c_sign_in_name(&self, i: u32) -> String {
        let u = &self.users[i as usize];
        let (f, l) = name_parts(u.name_key);
        match u.arch {
            Archetype::B2cUserName => format!("{f}{l}{i}"),
            Archetype::B2cSocial => format!("{f}.{l}{i}@gmail.com"),
            _ => format!(
                "{f}.{l}{i}@{}",
                ["outlook.com", "example.org", "proton.me", "yahoo.com"][(u.name_key % 4) as usize]
            ),
        }
    }

    pub fn job_title(&self, i: u32) -> Option<&'static str> {
        let u = &self.users[i as usize];
        match u.arch {
            Archetype::Executive => Some(EXEC_TITLES[(u.name_key % 6) as usize]),
            Archetype::Service | Archetype::Shared | Archetype::Room | Archetype::BreakGlass => {
                None
            }
            a if a.is_guest() => None,
            Archetype::B2cLocal | Archetype::B2cUserName | Archetype::B2cSocial => None,
            Archetype::Privileged => Some("IT Administrator"),
            _ => Some(TITLES[(u.name_key % 8) as usize]),
        }
    }

    pub fn department(&self, i: u32) -> Option<&'static str> {
        let u = &self.users[i as usize];
        match u.arch {
            Archetype::Active
            | Archetype::Inactive
            | Archetype::NeverSignedInOld
            | Archetype::NeverSignedInNew
            | Archetype::NoSignInData
            | Archetype::Attacked
            | Archetype::Executive
            | Archetype::Privileged => Some(DEPARTMENTS[u.dept as usize % 8]),
            _ => None,
        }
    }

    pub fn user_type(&self, i: u32) -> &'static str {
        if self.users[i as usize].arch.is_guest() {
            "Guest"
        } else {
            "Member"
        }
    }

    pub fn creation_type(&self, i: u32) -> Option<&'static str> {
        match self.users[i as usize].arch {
            Archetype::B2cLocal | Archetype::B2cUserName => Some("LocalAccount"),
            a if a.is_guest() => Some("Invitation"),
            _ => None,
        }
    }

    /// Members of a fixed group, as a predicate.
    pub fn in_group(&self, g: usize, i: u32) -> bool {
        let u = &self.users[i as usize];
        if u.is_deleted() {
            return false;
        }
        match g {
            G_ALL => {
                !u.arch.is_guest()
                    && matches!(u.purpose, P_USER)
                    && u.arch != Archetype::Service
                    && self.kind == TenantKind::Workforce
            }
            G_LICENSING => u.group_licenses != 0,
            G_EXCLUSIONS => u.arch == Archetype::BreakGlass || u.flags & F_EXCLUDED_GROUP != 0,
            G_SERVICE => u.arch == Archetype::Service,
            G_EXECS => u.arch == Archetype::Executive,
            _ => false,
        }
    }

    pub fn group_id(&self, g: usize) -> String {
        ids::named_guid(self.seed, GROUPS[g])
    }

    pub fn group_index(&self, id: &str) -> Option<usize> {
        (0..GROUPS.len()).find(|g| self.group_id(*g).eq_ignore_ascii_case(id))
    }

    /// Nested groups: "Service Accounts" is a member of "Dormant Exclusions".
    pub fn nested_groups(g: usize) -> &'static [usize] {
        if g == G_EXCLUSIONS { &[G_SERVICE] } else { &[] }
    }

    /// Number of live directory objects (users + groups), for the quota.
    pub fn object_count(&self) -> usize {
        self.users
            .iter()
            .filter(|u| u.flags & F_PURGED == 0)
            .count()
            + GROUPS.len()
    }

    /// Forget soft-deleted users older than 30 days (Graph purges them).
    pub fn purge_expired(&mut self, now: i64) {
        for u in &mut self.users {
            if u.deleted_at != 0 && u.flags & F_PURGED == 0 && now - u.deleted_at >= 30 * DAY {
                u.flags |= F_PURGED;
            }
        }
    }

    /// The real last successful activity across sign-ins and usage.
    pub fn truth_last_activity(&self, i: u32) -> i64 {
        let u = &self.users[i as usize];
        u.usage.iter().copied().fold(u.last_success, i64::max)
    }

    /// Append a new guest (from an invitation); returns its index.
    pub fn add_guest(&mut self, mail: &str, now: i64) -> u32 {
        let i = self.users.len() as u32;
        let mut rng = Rng::new(ids::hash(&[self.seed, u64::from(i), 0x1417]));
        self.users.push(UserRec {
            created: now,
            last_interactive: 0,
            last_noninteractive: 0,
            last_success: 0,
            usage: [0; 4],
            deleted_at: 0,
            state_changed: now,
            manager: 0,
            name_key: rng.next_u64() as u32,
            arch: Archetype::GuestPending,
            flags: F_ENABLED | F_PENDING | F_CREATED_LATER,
            licenses: 0,
            group_licenses: 0,
            purpose: P_NONE,
            role: 0,
            dept: 0,
        });
        self.invited_mail.insert(i, mail.to_ascii_lowercase());
        self.upn_heads.push(upn_head(&self.upn(i)));
        i
    }

    /// Adds `n` unmanaged (viral) guests from `domains` unmanaged home
    /// domains of their own (`campus000.example.edu`, …), dealt round robin:
    /// a realm-lookup and reset-redemption load. Their realm answers
    /// `IsViral: true`.
    pub fn add_viral_guests(&mut self, n: u32, domains: u32) {
        let domains = domains.max(1);
        let first = self.viral_domains.len() as u32;
        self.viral_domains
            .extend((first..first + domains).map(|k| format!("campus{k:03}.example.edu")));
        for j in 0..n {
            let i = self.users.len() as u32;
            self.users.push(generate_user(
                self.kind,
                self.seed,
                self.t0,
                i,
                i + 1,
                Some(Archetype::GuestViral),
            ));
            self.viral_domain_of.insert(i, first + j % domains);
            self.upn_heads.push(upn_head(&self.upn(i)));
        }
    }

    /// Whether guest `i`'s invitation waits for its redemption
    /// (`externalUserState = PendingAcceptance`).
    pub fn is_pending(&self, i: u32) -> bool {
        let u = &self.users[i as usize];
        u.arch.is_guest() && u.flags & F_PENDING != 0
    }

    /// Whether `domain` (lower case) is an unmanaged home realm.
    pub fn is_viral_domain(&self, domain: &str) -> Option<bool> {
        GUEST_DOMAINS
            .iter()
            .find(|(d, _)| *d == domain)
            .map(|(_, viral)| *viral)
            .or_else(|| {
                self.viral_domains
                    .iter()
                    .any(|d| d == domain)
                    .then_some(true)
            })
    }

    /// Adds members with these exact UPNs (say, one per legal first
    /// character, which the name generator never produces). Graph's rules
    /// hold: the local part uses only `A–Z a–z 0–9 ' . - _ ! # ^ ~` and does
    /// not start with a period, the domain is the tenant's, and a UPN is
    /// unique without regard to case. Workforce users are ordinary active
    /// members; B2C ones local accounts.
    pub fn add_users_with_upns(&mut self, upns: &[String]) -> Result<(), String> {
        for upn in upns {
            let (local, domain) = upn
                .split_once('@')
                .ok_or_else(|| format!("{upn:?} has no @"))?;
            let legal = |c: char| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c);
            if local.is_empty() || local.starts_with('.') || !local.chars().all(legal) {
                return Err(format!(
                    "{upn:?}: Property userPrincipalName is invalid (local part)"
                ));
            }
            if !domain.eq_ignore_ascii_case(&self.domain) {
                return Err(format!(
                    "{upn:?}: the domain is not a verified domain of this tenant ({})",
                    self.domain
                ));
            }
            if self.resolve(upn).is_some() {
                return Err(format!(
                    "{upn:?}: Another object with the same value for property userPrincipalName already exists."
                ));
            }
            let i = self.users.len() as u32;
            let arch = match self.kind {
                TenantKind::Workforce => Archetype::Active,
                TenantKind::B2c => Archetype::B2cLocal,
            };
            let n = self.users.len() as u32 + 1;
            self.users.push(generate_user(
                self.kind,
                self.seed,
                self.t0,
                i,
                n,
                Some(arch),
            ));
            self.seeded_upn.insert(i, upn.clone());
        }
        Ok(())
    }

    /// Whether user `i`'s UPN can start with `prefix` (ASCII case-insensitive),
    /// judged from its first [`UPN_HEAD`] bytes: `Some(answer)` when those
    /// decide it, `None` when the prefix is longer and the whole UPN must be
    /// compared (also for non-ASCII text, which folds case beyond ASCII).
    pub fn upn_head_says(&self, i: u32, prefix: &str) -> Option<bool> {
        let head = self.upn_heads.get(i as usize)?;
        let p = prefix.as_bytes();
        // Unicode case folding is for the full comparison.
        if !p.is_ascii() || !head.is_ascii() {
            return None;
        }
        let n = p.len().min(UPN_HEAD);
        if !head[..n].eq_ignore_ascii_case(&p[..n]) {
            return Some(false);
        }
        (p.len() <= UPN_HEAD).then_some(true)
    }

    /// Write the ground truth, one JSON object per line.
    pub fn write_truth(&self, w: &mut impl Write) -> std::io::Result<()> {
        for i in 0..self.users.len() as u32 {
            let u = &self.users[i as usize];
            let rec = TruthLine {
                id: self.user_id(i),
                upn: self.upn(i),
                kinds: self.kinds(i),
                user_type: self.user_type(i),
                account_enabled: u.enabled(),
                created: iso(u.created),
                last_successful_activity: opt_iso(self.truth_last_activity(i)),
                last_successful_sign_in: opt_iso(u.last_success),
                last_interactive_attempt: opt_iso(u.last_interactive),
                last_non_interactive_attempt: opt_iso(u.last_noninteractive),
                exchange_last_activity: opt_iso(u.usage[0]),
                onedrive_last_activity: opt_iso(u.usage[1]),
                sharepoint_last_activity: opt_iso(u.usage[2]),
                teams_last_activity: opt_iso(u.usage[3]),
                licenses: SKUS
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| u.all_licenses() & (1 << b) != 0)
                    .map(|(_, s)| s.part)
                    .collect(),
                group_licensed: u.group_licenses != 0,
                mailbox: PURPOSES[u.purpose as usize],
                role: (u.role > 0).then(|| ROLES[u.role as usize - 1].1),
                manager_id: self.manager_of(i).map(|m| self.user_id(m)),
                job_title: self.job_title(i),
                reenabled_by_person: u.flags & F_REENABLED_BY_PERSON != 0,
            };
            serde_json::to_writer(&mut *w, &rec)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The user's manager: the nearest person up the generated tree (a shared
    /// mailbox or service account cannot manage anyone), `None` when deleted.
    /// A guest's sponsor: a third of the generated guests have one (a
    /// member with a mailbox, chosen by hash), unless set by hand.
    pub fn sponsor_of(&self, i: u32) -> Option<u32> {
        if let Some(set) = self.sponsors.get(&i) {
            return *set;
        }
        let u = &self.users[i as usize];
        if !u.arch.is_guest() {
            return None;
        }
        let h = ids::mix64(u64::from(i) ^ 0x5b0d_5e55);
        if !h.is_multiple_of(3) {
            return None;
        }
        let n = self.users.len() as u32;
        let start = (h >> 8) as u32 % n;
        (0..n.min(500)).map(|k| (start + k) % n).find(|&j| {
            let c = &self.users[j as usize];
            c.arch == Archetype::Active && c.enabled() && c.has_mailbox() && !c.is_deleted()
        })
    }

    pub fn manager_of(&self, i: u32) -> Option<u32> {
        let mut m = self.users[i as usize].manager;
        while m > 0 {
            let cand = &self.users[(m - 1) as usize];
            let person = matches!(
                cand.arch,
                Archetype::Active
                    | Archetype::Inactive
                    | Archetype::Executive
                    | Archetype::Privileged
                    | Archetype::NeverSignedInOld
                    | Archetype::NeverSignedInNew
                    | Archetype::Attacked
                    | Archetype::NoSignInData
            );
            if person {
                return (!cand.is_deleted()).then_some(m - 1);
            }
            m = cand.manager;
        }
        None
    }

    /// Kinds of a user as risk-relevant labels.
    pub fn kinds(&self, i: u32) -> Vec<&'static str> {
        let u = &self.users[i as usize];
        let mut k = vec![u.arch.name()];
        if u.flags & F_SYNCED != 0 {
            k.push("on-premises-synced");
        }
        if u.role > 0 && u.arch != Archetype::Privileged {
            k.push("privileged-role");
        }
        if u.arch.is_guest() {
            k.push("guest");
        }
        if u.flags & F_REENABLED_BY_PERSON != 0 {
            k.push("recently-reenabled");
        }
        if u.flags & F_EXCLUDED_GROUP != 0 || u.arch == Archetype::BreakGlass {
            k.push("in-exclusion-group");
        }
        k
    }
}

/// One ground-truth line; absent keys mean "none" (never, no manager, no role).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TruthLine {
    id: String,
    upn: String,
    /// Archetype first (`active`, `inactive`, `never-signed-in-old`, …), then flags
    /// (`on-premises-synced`, `privileged-role`, `guest`, `recently-reenabled`, `in-exclusion-group`).
    kinds: Vec<&'static str>,
    user_type: &'static str,
    account_enabled: bool,
    /// `createdDateTime`.
    created: String,
    /// The real last successful activity over sign-ins and the four usage services.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_successful_activity: Option<String>,
    /// The real last successful sign-in, even before 2023-12-01 (Graph hides those).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_successful_sign_in: Option<String>,
    /// Last interactive attempt, successful or failed (Graph shows it from April 2020).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_interactive_attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_non_interactive_attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_last_activity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    onedrive_last_activity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sharepoint_last_activity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    teams_last_activity: Option<String>,
    licenses: Vec<&'static str>,
    group_licensed: bool,
    /// `mailboxSettings.userPurpose` at generation (`none` = no mailbox).
    mailbox: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_title: Option<&'static str>,
    /// The audit log shows a person re-enabled the account within the retention window.
    reenabled_by_person: bool,
}

/// ISO 8601 UTC with a `Z`, as Graph writes dates.
pub fn iso(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub fn opt_iso(secs: i64) -> Option<String> {
    (secs != 0).then(|| iso(secs))
}

/// An age in days skewed toward the recent past but reaching years back.
fn inactive_age(rng: &mut Rng) -> i64 {
    match rng.below(10) {
        0..=3 => rng.range(31, 120),
        4..=6 => rng.range(121, 400),
        7..=8 => rng.range(401, 1000),
        _ => rng.range(1001, 2400),
    }
}

fn generate_user(
    kind: TenantKind,
    seed: u64,
    t0: i64,
    i: u32,
    n: u32,
    forced: Option<Archetype>,
) -> UserRec {
    let mut rng = Rng::new(ids::hash(&[seed, u64::from(i)]));
    let roll = rng.below(1000);
    let arch = forced.unwrap_or(match kind {
        TenantKind::Workforce => match i {
            0 => Archetype::Privileged,
            1 | 2 => Archetype::BreakGlass,
            3 => Archetype::Shared,
            _ => match roll {
                0..=529 => Archetype::Active,
                530..=679 => Archetype::Inactive,
                680..=719 => Archetype::NeverSignedInOld,
                720..=739 => Archetype::NeverSignedInNew,
                740..=759 => Archetype::NoSignInData,
                760..=774 => Archetype::Attacked,
                775..=789 => Archetype::Executive,
                790..=814 => Archetype::Service,
                815..=829 => Archetype::Shared,
                830..=834 => Archetype::Room,
                835..=844 => Archetype::Privileged,
                845..=894 => Archetype::GuestAccepted,
                895..=939 => Archetype::GuestPending,
                _ => Archetype::GuestViral,
            },
        },
        TenantKind::B2c => match i {
            0 | 1 => Archetype::B2cAdmin,
            _ => match roll {
                0..=649 => Archetype::B2cLocal,
                650..=749 => Archetype::B2cUserName,
                750..=989 => Archetype::B2cSocial,
                _ => Archetype::B2cAdmin,
            },
        },
    });
    let name_key = rng.next_u64() as u32;
    let dept = rng.below(8) as u8;
    let years_back =
        |rng: &mut Rng, lo: i64, hi: i64| t0 - rng.range(lo, hi) * DAY - rng.range(0, DAY - 1);
    let mut u = UserRec {
        created: years_back(&mut rng, 60, 3000),
        last_interactive: 0,
        last_noninteractive: 0,
        last_success: 0,
        usage: [0; 4],
        deleted_at: 0,
        state_changed: 0,
        manager: 0,
        name_key,
        arch,
        flags: F_ENABLED,
        licenses: 0,
        group_licenses: 0,
        purpose: P_USER,
        role: 0,
        dept,
    };
    let recent = |rng: &mut Rng, max_days: i64| t0 - rng.range(0, max_days * DAY);
    // Sign-in pattern: an activity moment, then interactive/non-interactive attempts around it.
    let signed_in_at = |u: &mut UserRec, rng: &mut Rng, at: i64| {
        let at = at.max(u.created + 3600);
        u.last_success = at;
        u.last_interactive = at - rng.range(0, 3 * DAY).min(at - u.created);
        if rng.chance(0.8) {
            u.last_noninteractive = at;
        } else {
            u.last_interactive = at;
        }
    };
    let people = |u: &mut UserRec, rng: &mut Rng| {
        u.licenses = match rng.below(10) {
            0..=5 => L_E3 | L_EMS,
            6..=7 => L_F3,
            8 => L_E3 | L_VISIO,
            _ => L_E3 | L_P1,
        };
        if u.licenses & L_E3 != 0 && rng.chance(0.3) {
            u.licenses &= !L_E3;
            u.group_licenses = L_E3;
        }
        if rng.chance(0.12) {
            u.flags |= F_SYNCED;
        }
    };
    let usage_follows = |u: &mut UserRec, rng: &mut Rng| {
        if u.last_success == 0 || u.all_licenses() & OFFICE_MASK == 0 {
            return;
        }
        let base = u.last_success;
        u.usage[0] = base - rng.range(0, 2 * DAY);
        if rng.chance(0.7) {
            u.usage[3] = base - rng.range(0, 4 * DAY);
        }
        if rng.chance(0.4) {
            u.usage[1] = base - rng.range(0, 10 * DAY);
        }
        if rng.chance(0.3) {
            u.usage[2] = base - rng.range(0, 20 * DAY);
        }
        for x in &mut u.usage {
            if *x != 0 && *x < u.created {
                *x = u.created;
            }
        }
    };
    match arch {
        Archetype::Active | Archetype::Executive | Archetype::Privileged => {
            people(&mut u, &mut rng);
            let at = if arch != Archetype::Active && rng.chance(0.3) {
                t0 - inactive_age(&mut rng) * DAY
            } else {
                recent(&mut rng, 30)
            };
            signed_in_at(&mut u, &mut rng, at);
            usage_follows(&mut u, &mut rng);
            if arch == Archetype::Executive {
                u.licenses = L_E5;
                u.group_licenses = 0;
            }
            if arch == Archetype::Privileged {
                u.role = 1 + rng.below(ROLES.len() as u64) as u8;
                // A third of role holders are PIM-eligible only (drawn
                // from a hash, so the rest of the tenant stays as it was).
                if ids::hash(&[seed, u64::from(i), 91]).is_multiple_of(3) {
                    u.flags |= F_ELIGIBLE;
                }
            }
        }
        Archetype::Inactive => {
            people(&mut u, &mut rng);
            let at = t0 - inactive_age(&mut rng) * DAY - rng.range(0, DAY);
            signed_in_at(&mut u, &mut rng, at);
            usage_follows(&mut u, &mut rng);
            // Some "inactive" people still read mail: only the usage report shows it.
            if rng.chance(0.08) && u.all_licenses() & OFFICE_MASK != 0 {
                u.usage[0] = recent(&mut rng, 20);
            }
            if rng.chance(0.03) {
                u.flags |= F_REENABLED_BY_PERSON;
            }
            if rng.chance(0.1) {
                u.flags &= !F_ENABLED;
            }
        }
        Archetype::NeverSignedInOld => {
            people(&mut u, &mut rng);
            u.created = years_back(&mut rng, 90, 2000);
        }
        Archetype::NeverSignedInNew => {
            people(&mut u, &mut rng);
            u.created = years_back(&mut rng, 0, 25);
        }
        Archetype::NoSignInData => {
            people(&mut u, &mut rng);
            // Signed in before sign-in logging (April 2020): Graph has no signInActivity.
            u.created = interactive_epoch() - rng.range(400, 2000) * DAY;
            u.last_success = interactive_epoch() - rng.range(30, 300) * DAY;
            u.last_interactive = u.last_success;
            if rng.chance(0.5) && u.all_licenses() & OFFICE_MASK != 0 {
                u.usage[0] = recent(&mut rng, 40);
            }
        }
        Archetype::Attacked => {
            people(&mut u, &mut rng);
            // Password spray: failed interactive attempts are recent, success is old or never.
            if rng.chance(0.6) {
                let at = t0 - rng.range(200, 900) * DAY;
                signed_in_at(&mut u, &mut rng, at);
                u.last_noninteractive = 0;
            }
            u.last_interactive = recent(&mut rng, 3);
        }
        Archetype::Service => {
            u.purpose = P_NONE;
            if rng.chance(0.7) {
                let at = recent(&mut rng, 2);
                u.last_success = at;
                u.last_noninteractive = at;
            } else if rng.chance(0.5) {
                let at = t0 - inactive_age(&mut rng) * DAY;
                u.last_success = at;
                u.last_noninteractive = at;
            }
            if rng.chance(0.5) {
                u.flags |= F_EXCLUDED_GROUP;
            }
            if rng.chance(0.2) {
                u.flags |= F_SYNCED;
            }
        }
        Archetype::Shared | Archetype::Room => {
            u.purpose = if arch == Archetype::Shared {
                P_SHARED
            } else {
                P_ROOM
            };
            u.flags &= !F_ENABLED;
            if rng.chance(0.6) {
                u.usage[0] = recent(&mut rng, 60);
            }
        }
        Archetype::BreakGlass => {
            u.role = 1;
            u.purpose = P_NONE;
            if i == 2 {
                let at = t0 - 200 * DAY;
                u.last_success = at;
                u.last_interactive = at;
            }
        }
        Archetype::GuestPending => {
            u.purpose = P_NONE;
            u.flags |= F_PENDING;
            u.created = years_back(&mut rng, 1, 900);
            u.state_changed = u.created;
        }
        Archetype::GuestAccepted | Archetype::GuestViral => {
            u.purpose = P_NONE;
            u.state_changed = u.created + rng.range(0, 5 * DAY);
            let at = if rng.chance(0.5) {
                recent(&mut rng, 60)
            } else {
                t0 - inactive_age(&mut rng) * DAY
            };
            if rng.chance(0.9) {
                signed_in_at(&mut u, &mut rng, at);
            }
            if rng.chance(0.15) {
                u.licenses = L_EMS;
            }
        }
        Archetype::B2cLocal | Archetype::B2cUserName | Archetype::B2cSocial => {
            u.purpose = P_NONE;
            let r = rng.below(10);
            if r < 6 {
                let at = recent(&mut rng, 60);
                u.last_success = at;
                u.last_interactive = at;
                if rng.chance(0.7) {
                    u.last_noninteractive = (at + rng.range(0, 5 * DAY)).min(t0);
                    u.last_success = u.last_noninteractive;
                }
            } else if r < 9 {
                let at = t0 - inactive_age(&mut rng) * DAY;
                u.last_success = at;
                u.last_interactive = at;
            }
        }
        Archetype::B2cAdmin => {
            u.purpose = P_NONE;
            u.role = if i == 0 { 1 } else { 2 };
            let at = recent(&mut rng, 20);
            signed_in_at(&mut u, &mut rng, at);
        }
    }
    // Data-retention windows: Graph only knows attempts after these dates.
    u.last_success = u.last_success.min(t0);
    if u.arch != Archetype::NoSignInData {
        u.created = u.created.min(if u.last_success != 0 {
            u.last_success
        } else {
            t0
        });
    }
    u.state_changed = if u.state_changed == 0 {
        u.created
    } else {
        u.state_changed
    };
    // Manager hierarchy: a tree of people with fan-out 8 over indices.
    if kind == TenantKind::Workforce
        && matches!(
            arch,
            Archetype::Active
                | Archetype::Inactive
                | Archetype::Executive
                | Archetype::Privileged
                | Archetype::NeverSignedInOld
                | Archetype::NeverSignedInNew
                | Archetype::Attacked
                | Archetype::NoSignInData
        )
        && i > 8
    {
        let m = (i - 1) / 8;
        if m < n {
            u.manager = m + 1;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_upns_follow_graphs_rules_and_resolve() {
        let mut t = Tenant::generate(TenantKind::Workforce, 20, 1, Utc::now());
        let d = t.domain.clone();
        let ok: Vec<String> = [
            "~tilde", "O'Neil", "#x", "^c", "!b", "_u", "-d", "9n", "a.b",
        ]
        .iter()
        .map(|l| format!("{l}@{d}"))
        .collect();
        t.add_users_with_upns(&ok).expect("legal UPNs");
        for upn in &ok {
            let i = t
                .resolve(&upn.to_uppercase())
                .expect("resolves, case-insensitively");
            assert_eq!(&t.upn(i), upn);
        }
        assert_eq!(t.users.len(), 20 + ok.len());
        for bad in [
            format!(".lead@{d}"),
            format!("sp ace@{d}"),
            format!("semi;colon@{d}"),
            "x@elsewhere.com".to_owned(),
            format!("o'neil@{d}"),
            "no-at-sign".to_owned(),
        ] {
            assert!(
                t.add_users_with_upns(std::slice::from_ref(&bad)).is_err(),
                "{bad}"
            );
        }
        assert_eq!(t.users.len(), 20 + ok.len(), "nothing added on refusal");
    }

    #[test]
    fn every_user_resolves_by_id_and_upn() {
        for kind in [TenantKind::Workforce, TenantKind::B2c] {
            let mut t = Tenant::generate(kind, 3000, 9, Utc::now());
            let g = t.add_guest("new.person@fabrikam.com", t.t0);
            for i in 0..t.users.len() as u32 {
                assert_eq!(t.resolve(&t.user_id(i)), Some(i));
                assert_eq!(t.resolve(&t.upn(i).to_uppercase()), Some(i), "{}", t.upn(i));
            }
            assert_eq!(t.resolve("new.person_fabrikam.com#EXT#@nowhere"), None);
            assert_eq!(t.resolve(&t.upn(g)), Some(g));
        }
    }

    /// The UPN head index answers `startswith` exactly as comparing the
    /// whole lower-cased UPN does, for short and long prefixes, invited
    /// guests included.
    #[test]
    fn upn_heads_agree_with_whole_upns() {
        for kind in [TenantKind::Workforce, TenantKind::B2c] {
            let mut t = Tenant::generate(kind, 2000, 5, Utc::now());
            t.add_guest("Zoë.Quinn@fabrikam.com", t.t0);
            assert_eq!(t.upn_heads.len(), t.users.len());
            for i in 0..t.users.len() as u32 {
                let upn = t.upn(i).to_lowercase();
                let mut prefixes: Vec<String> = (1..=upn.len().min(7))
                    .filter_map(|n| upn.get(..n).map(str::to_uppercase))
                    .collect();
                prefixes.extend(["a", "ja", "svc-", "zz", "ZOË"].map(String::from));
                for p in prefixes {
                    let whole = upn.starts_with(&p.to_lowercase());
                    let head = t.upn_head_says(i, &p);
                    assert!(
                        head.is_none_or(|h| h == whole),
                        "{upn} / {p}: head says {head:?}"
                    );
                    if p.len() <= UPN_HEAD && p.is_ascii() && upn.is_ascii() {
                        assert_eq!(head, Some(whole), "{upn} / {p}");
                    }
                }
            }
        }
    }
}
