//! Configuration: `dormant.toml` overlaid by environment variables (Functions
//! app settings), validated once at start.
//!
//! Layering is figment's: the TOML file (path in `DORMANT_CONFIG`, default
//! `./dormant.toml`), then every `DORMANT_*` variable, nested with `__`
//! (`DORMANT_POLICY__INACTIVE_AFTER_DAYS=120` → `policy.inactive_after_days`).
//! Every rule below has a test; a broken value is reported with its TOML key,
//! its environment name and the fix, and the process exits 2.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format as _, Toml};
use figment::value::{Dict, Map as FigMap, Tag, Value as FigValue};
use figment::{Figment, Metadata, Profile, Provider};
use regex::Regex;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use url::Url;
use uuid::Uuid;

pub mod storage;

pub use storage::StorageConfig;
use storage::{
    BLOB_URI_SETTING, CONNECTION_SETTING, DEFAULT_STORE_DIR, QUEUE_URI_SETTING, STORE_DIR_SETTING,
};

/// Environment variables that start with `DORMANT_` but are not settings.
const NOT_SETTINGS: &[&str] = &["DORMANT_CONFIG", "DORMANT_SIM_", "DORMANT_TEST"];

pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

const DEFAULT_EXECUTIVE_TITLE: &str = r"(?i)\b(chief|ceo|cfo|cto|coo|ciso|cio|president|vice[- ]president|vp|evp|svp|general counsel|board|chair(man|woman|person)?|founder|partner)\b";
const DEFAULT_SERVICE_ACCOUNT_UPN: &str =
    r"(?i)^(svc|srv|service|sa|app|sys|noreply|no-reply|scan|sync|adm|admin)[-_.]";

/// One broken setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The TOML key (`policy.inactive_after_days`).
    pub key: String,
    /// The app setting that overrides it (`DORMANT_POLICY__INACTIVE_AFTER_DAYS`).
    pub env: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (env {}): {}. Fix: {}",
            self.key, self.env, self.problem, self.fix
        )
    }
}

/// Everything wrong with a configuration, not just the first thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.key.as_str()).collect()
    }
}

/// `policy.inactive_after_days` → `DORMANT_POLICY__INACTIVE_AFTER_DAYS`.
pub fn env_name(key: &str) -> String {
    if key == "azure_web_jobs_storage" {
        return "AzureWebJobsStorage".into();
    }
    format!("DORMANT_{}", key.replace('.', "__").to_ascii_uppercase())
}

fn problem(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        env: env_name(key),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Workforce (Entra ID) or Azure AD B2C: B2C has its own request budget
/// (200 requests/s per tenant) and no `$count`/`$search`/`ne`/`not`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantKind {
    #[default]
    Workforce,
    B2c,
}

impl TenantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workforce => "workforce",
            Self::B2c => "b2c",
        }
    }
}

/// How dormant proves who it is to Entra ID (`DORMANT_CREDENTIAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialKind {
    #[default]
    ManagedIdentity,
    ClientSecret,
    ClientCertificate,
    WorkloadIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing in the tenant changes.
    Report,
    Enforce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActivitySource {
    SignIn,
    UsageReport,
}

/// A user named in configuration: an object id or a UPN (compared
/// case-insensitively, as Entra does).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum UserRef {
    ObjectId(Uuid),
    Upn(String),
}

impl UserRef {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(id) = Uuid::parse_str(text) {
            return Some(Self::ObjectId(id));
        }
        let (local, domain) = text.split_once('@')?;
        let legal = |c: char| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c);
        (!local.is_empty()
            && !local.starts_with('.')
            && local.chars().all(legal)
            && domain.contains('.')
            && !domain.starts_with('.'))
        .then(|| Self::Upn(text.to_ascii_lowercase()))
    }
}

/// Days after a case opens at which each step becomes due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phases {
    pub notify: u32,
    pub disable: u32,
    pub convert_mailbox: u32,
    pub remove_licenses: u32,
    pub delete: u32,
    /// Permanent deletion from deleted items; `None` leaves it to the
    /// directory's own 30-day purge, which keeps `restore` possible.
    pub purge: Option<u32>,
}

impl Default for Phases {
    /// CONTRACT's defaults.
    fn default() -> Self {
        Self {
            notify: 0,
            disable: 14,
            convert_mailbox: 14,
            remove_licenses: 21,
            delete: 51,
            purge: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    pub max_new_cases: u32,
    pub max_percent: f64,
    /// The data-quality breaker: a run whose share of users without
    /// sign-in data is more than this many times the previous run's …
    pub unknown_growth: f64,
    /// … and above this percentage of scanned users quarantines itself.
    pub unknown_min_percent: f64,
    /// Likewise for new cases: more than this many times the previous
    /// run's …
    pub new_cases_growth: f64,
    /// … and more than this many.
    pub new_cases_min: u32,
}

/// `[policy.guests]`: what happens to guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guests {
    /// An invitation still `PendingAcceptance` this many days after it was
    /// sent (its state's change date, else the guest's creation) is
    /// `inactive` / `pending-invitation`, and deleted on the `delete` phase.
    pub pending_after_days: u32,
    /// Accepted guests are inactive after this many days (at least 30).
    pub inactive_after_days: u32,
    pub unmanaged: UnmanagedGuests,
    /// `sendInvitationMessage` of a redemption reset.
    pub send_invitation_message: bool,
}

impl Default for Guests {
    fn default() -> Self {
        Self {
            pending_after_days: 30,
            inactive_after_days: 90,
            unmanaged: UnmanagedGuests::Report,
            send_invitation_message: false,
        }
    }
}

/// What dormant does with unmanaged (viral) guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmanagedGuests {
    /// Listed for review with `reset-redemption` recommended.
    #[default]
    Report,
    /// In enforce mode, their redemption is reset (`POST /invitations`,
    /// `resetRedemption`): they redeem again with a managed identity.
    Reset,
}

#[derive(Debug, Clone)]
pub struct Notify {
    pub mail_from: Option<String>,
    pub webhook: Option<Url>,
    pub webhook_secret: Option<SecretString>,
}

/// `[policy.attest]`: owners answering "keep" through a notification's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// How long a "keep" holds the user.
    pub keep_days: u32,
}

/// Shortest `DORMANT_ATTEST_KEY` accepted (the key signs every link).
pub const MIN_ATTEST_KEY_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    pub inactive_after_days: u32,
    pub never_signed_in_grace_days: u32,
    pub activity_sources: Vec<ActivitySource>,
    pub exclude_groups: Vec<Uuid>,
    pub exclude_users: Vec<UserRef>,
    pub break_glass: Vec<UserRef>,
    pub executive_title_pattern: Regex,
    pub service_account_upn_pattern: Regex,
    pub phases: Phases,
    pub quarantine: Quarantine,
    pub notify: Notify,
    pub guests: Guests,
    pub attest: Attest,
}

#[derive(Debug, Clone)]
pub struct Gdpr {
    pub issuer: String,
    pub audience: String,
    pub metadata_url: Url,
    pub max_auth_age_secs: u64,
    /// `gdpr_policies`: the B2C user flows / custom policies whose tokens
    /// may call the endpoints (`tfp`, else `acr`; case-insensitive).
    /// Empty: any (only possible for an issuer that is not B2C).
    pub policies: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub tenant_id: String,
    pub tenant_kind: TenantKind,
    pub client_id: Option<String>,
    pub credential: CredentialKind,
    pub client_secret: Option<SecretString>,
    pub keyvault_url: Option<Url>,
    pub client_secret_name: Option<String>,
    pub client_cert_name: Option<String>,
    pub graph_url: Url,
    pub authority_host: Url,
    pub ca_file: Option<PathBuf>,
    /// Share (0, 1] of the app's per-tenant Graph budget this deployment
    /// may use: several instances, or another tool on the same app
    /// registration, share it.
    pub graph_budget_share: f64,
    /// `DORMANT_EXCHANGE_URL`: Exchange Online's REST admin endpoint root
    /// (`https://outlook.office365.com`), for converting mailboxes to shared.
    /// `None`: the conversion waits for a person, and licenses stay.
    pub exchange_url: Option<Url>,
    pub storage: StorageConfig,
    pub gdpr: Option<Gdpr>,
    /// `DORMANT_ATTEST_KEY`: the key that signs "keep" links, given
    /// directly (local runs; a Key Vault reference resolves into it too).
    pub attest_key: Option<SecretString>,
    /// `DORMANT_ATTEST_KEY_NAME`: the Key Vault secret holding that key.
    pub attest_key_name: Option<String>,
    /// `DORMANT_PUBLIC_URL`: the function app's public address, the base of
    /// the links in notifications. `None`: no links.
    pub public_url: Option<Url>,
    pub policy: Policy,
}

/// A list given either as a TOML/JSON array or, in an app setting, as
/// comma-separated text (`a@contoso.com,b@contoso.com`).
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::Many(v)) => Some(v),
        Some(OneOrMany::One(s)) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    })
}

/// Text as given. Numbers in app settings arrive as text, and some keys
/// (tenant id, client id) would otherwise be parsed as numbers by figment.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "text")]
    tenant_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    tenant_kind: Option<String>,
    #[serde(default, deserialize_with = "text")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    credential: Option<String>,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default, deserialize_with = "text")]
    keyvault_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    client_secret_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    client_cert_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    graph_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    authority_host: Option<String>,
    #[serde(default, deserialize_with = "text")]
    ca_file: Option<String>,
    #[serde(default)]
    graph_budget_share: Option<f64>,
    #[serde(default, deserialize_with = "text")]
    exchange_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    store_dir: Option<String>,
    #[serde(default, deserialize_with = "text")]
    gdpr_issuer: Option<String>,
    #[serde(default, deserialize_with = "text")]
    gdpr_audience: Option<String>,
    #[serde(default, deserialize_with = "text")]
    gdpr_metadata_url: Option<String>,
    #[serde(default)]
    gdpr_max_auth_age_secs: Option<u64>,
    #[serde(default, deserialize_with = "list")]
    gdpr_policies: Option<Vec<String>>,
    #[serde(default)]
    attest_key: Option<SecretString>,
    #[serde(default, deserialize_with = "text")]
    attest_key_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    public_url: Option<String>,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, deserialize_with = "text")]
    mode: Option<String>,
    #[serde(default)]
    inactive_after_days: Option<u32>,
    #[serde(default)]
    never_signed_in_grace_days: Option<u32>,
    #[serde(default, deserialize_with = "list")]
    activity_sources: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    exclude_groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    exclude_users: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    break_glass: Option<Vec<String>>,
    #[serde(default, deserialize_with = "text")]
    executive_title_pattern: Option<String>,
    #[serde(default, deserialize_with = "text")]
    service_account_upn_pattern: Option<String>,
    #[serde(default)]
    phases: RawPhases,
    #[serde(default)]
    quarantine: RawQuarantine,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    guests: RawGuests,
    #[serde(default)]
    attest: RawAttest,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuests {
    pending_after_days: Option<u32>,
    inactive_after_days: Option<u32>,
    #[serde(default, deserialize_with = "text")]
    unmanaged: Option<String>,
    send_invitation_message: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttest {
    keep_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhases {
    notify: Option<u32>,
    disable: Option<u32>,
    convert_mailbox: Option<u32>,
    remove_licenses: Option<u32>,
    delete: Option<u32>,
    purge: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    max_new_cases: Option<u32>,
    max_percent: Option<f64>,
    unknown_growth: Option<f64>,
    unknown_min_percent: Option<f64>,
    new_cases_growth: Option<f64>,
    new_cases_min: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    #[serde(default, deserialize_with = "text")]
    mail_from: Option<String>,
    #[serde(default, deserialize_with = "text")]
    webhook: Option<String>,
    #[serde(default)]
    webhook_secret: Option<SecretString>,
}

/// The `DORMANT_*` variables as a figment provider, from any list of pairs
/// so tests never touch the process environment.
struct EnvVars(Vec<(String, String)>);

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_, keys| env_name(&keys.join(".")))
    }

    fn data(&self) -> Result<FigMap<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix("DORMANT_") else {
                continue;
            };
            if NOT_SETTINGS.iter().any(|n| name.starts_with(n)) || value.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let parsed: FigValue = value
                .parse()
                .unwrap_or_else(|_| FigValue::from(value.clone()));
            insert_path(&mut root, &path, parsed);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: FigValue) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| FigValue::Dict(Tag::Default, Dict::new()));
            if !matches!(entry, FigValue::Dict(..)) {
                *entry = FigValue::Dict(Tag::Default, Dict::new());
            }
            if let FigValue::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Where the settings come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`, else `DORMANT_CONFIG`, else `./dormant.toml` if it
    /// exists.
    pub file: Option<PathBuf>,
    /// Whether `file` was named explicitly (then it must exist).
    pub file_required: bool,
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The process environment plus an optional `--config` path.
    pub fn from_process(config_flag: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_env(config_flag, env)
    }

    pub fn from_env(config_flag: Option<PathBuf>, env: Vec<(String, String)>) -> Self {
        let from_env = env
            .iter()
            .find(|(k, _)| k == "DORMANT_CONFIG")
            .map(|(_, v)| PathBuf::from(v));
        let (file, file_required) = match config_flag.or(from_env) {
            Some(p) => (Some(p), true),
            None => (Some(PathBuf::from("dormant.toml")), false),
        };
        Self {
            file,
            file_required,
            env,
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

impl Config {
    /// Reads and validates. The error lists every broken key.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = &sources.file {
            if path.exists() {
                figment = figment.merge(Toml::file_exact(path));
            } else if sources.file_required {
                return Err(ConfigError(vec![ConfigProblem {
                    key: "config".into(),
                    env: "DORMANT_CONFIG".into(),
                    problem: format!("the configuration file {} does not exist", path.display()),
                    fix: "point --config or DORMANT_CONFIG at an existing dormant.toml (see dormant.toml.example)".into(),
                }]));
            }
        }
        figment = figment.merge(EnvVars(sources.env.clone()));
        let raw: RawConfig = figment.extract().map_err(figment_problems)?;
        validate(raw, sources)
    }
}

fn figment_problems(err: figment::Error) -> ConfigError {
    ConfigError(
        err.into_iter()
            .map(|e| {
                let key = if e.path.is_empty() {
                    "(file)".to_owned()
                } else {
                    e.path.join(".")
                };
                let origin = e
                    .metadata
                    .as_ref()
                    .map(|m| format!(" (from {})", m.name))
                    .unwrap_or_default();
                let fix = match &e.kind {
                    figment::error::Kind::UnknownField(_, expected) => {
                        format!("remove it or use one of: {}", expected.join(", "))
                    }
                    figment::error::Kind::InvalidType(..) => {
                        "give a value of the type dormant.toml.example shows".to_owned()
                    }
                    _ => "see dormant.toml.example for the expected form".to_owned(),
                };
                let env = env_name(&key);
                ConfigProblem {
                    key,
                    env,
                    problem: format!("{}{origin}", describe_kind(&e.kind)),
                    fix,
                }
            })
            .collect(),
    )
}

/// figment's own text quotes the offending value, which may be a secret
/// typed into the wrong key: name its type only.
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let type_of = |a: &Actual| match a {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another type",
    };
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!("expected {expected}, found {}", type_of(actual))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("{} out of range: expected {expected}", type_of(actual))
        }
        Kind::InvalidLength(len, expected) => format!("{len} entries: expected {expected}"),
        Kind::UnknownVariant(_, expected) => {
            format!("unknown value: expected one of {}", expected.join(", "))
        }
        Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
        Kind::MissingField(field) => format!("missing key `{field}`"),
        Kind::DuplicateField(field) => format!("key `{field}` given twice"),
        // Parser messages quote the offending line; keep only where it is.
        Kind::Message(text) => match Regex::new(r"line (\d+)")
            .ok()
            .and_then(|re| re.captures(text))
            .and_then(|c| c.get(1))
        {
            Some(line) => format!(
                "the file could not be parsed (syntax error at line {})",
                line.as_str()
            ),
            None => "the value could not be read".to_owned(),
        },
        other => other.to_string(),
    }
}

fn parse_https(key: &str, text: &str, problems: &mut Vec<ConfigProblem>) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Some(url),
        Ok(_) => {
            problems.push(problem(
                key,
                "must be an https:// URL (Azure credentials refuse plain http)",
                "use the https address",
            ));
            None
        }
        Err(e) => {
            problems.push(problem(
                key,
                format!("is not a URL ({e})"),
                "write a full https:// URL",
            ));
            None
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate(raw: RawConfig, sources: &Sources) -> Result<Config, ConfigError> {
    let mut p = Vec::new();

    let tenant_id = match raw.tenant_id.as_deref().map(str::trim) {
        None | Some("") => {
            p.push(problem(
                "tenant_id",
                "is required",
                "set it to the directory (tenant) id or its x.onmicrosoft.com domain",
            ));
            String::new()
        }
        Some(t) if Uuid::parse_str(t).is_ok() || is_domain(t) => t.to_ascii_lowercase(),
        Some(_) => {
            p.push(problem(
                "tenant_id",
                "is neither a GUID nor a domain name",
                "copy the Directory (tenant) ID from the Entra admin center",
            ));
            String::new()
        }
    };

    let tenant_kind = match raw.tenant_kind.as_deref().map(str::trim) {
        None | Some("workforce") => TenantKind::Workforce,
        Some("b2c") => TenantKind::B2c,
        Some(other) => {
            p.push(problem(
                "tenant_kind",
                format!("{other:?} is not a tenant kind"),
                "use \"workforce\" or \"b2c\"",
            ));
            TenantKind::Workforce
        }
    };

    let credential = match raw.credential.as_deref().map(str::trim) {
        None | Some("managed-identity") => CredentialKind::ManagedIdentity,
        Some("client-secret") => CredentialKind::ClientSecret,
        Some("client-certificate") => CredentialKind::ClientCertificate,
        Some("workload-identity") => CredentialKind::WorkloadIdentity,
        Some(other) => {
            p.push(problem(
                "credential",
                format!("{other:?} is not a credential kind"),
                "use managed-identity, client-secret, client-certificate or workload-identity",
            ));
            CredentialKind::ManagedIdentity
        }
    };

    let client_id = raw
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match client_id {
        Some(id) if Uuid::parse_str(id).is_err() => p.push(problem(
            "client_id",
            "is not a GUID",
            "copy the Application (client) ID of the app registration",
        )),
        None if credential != CredentialKind::ManagedIdentity => p.push(problem(
            "client_id",
            "is required for this credential",
            "set the Application (client) ID of the app registration",
        )),
        _ => {}
    }

    let keyvault_url = raw
        .keyvault_url
        .as_deref()
        .and_then(|u| parse_https("keyvault_url", u, &mut p));
    let nonempty = |o: &Option<String>| {
        o.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let exchange_url = raw
        .exchange_url
        .as_deref()
        .and_then(|u| parse_https("exchange_url", u, &mut p));
    let client_secret_name = nonempty(&raw.client_secret_name);
    let client_cert_name = nonempty(&raw.client_cert_name);
    match credential {
        CredentialKind::ClientSecret
            if raw.client_secret.is_none()
                && (keyvault_url.is_none() || client_secret_name.is_none()) =>
        {
            p.push(problem(
                "client_secret",
                "the client-secret credential has no secret",
                "set DORMANT_CLIENT_SECRET (a Key Vault reference is fine) or DORMANT_KEYVAULT_URL with DORMANT_CLIENT_SECRET_NAME",
            ))
        }
        CredentialKind::ClientCertificate
            if keyvault_url.is_none() || client_cert_name.is_none() =>
        {
            p.push(problem(
                "client_cert_name",
                "the client-certificate credential needs the certificate from Key Vault",
                "set DORMANT_KEYVAULT_URL and DORMANT_CLIENT_CERT_NAME",
            ))
        }
        CredentialKind::WorkloadIdentity
            if sources.var("AZURE_FEDERATED_TOKEN_FILE").is_none() =>
        {
            p.push(ConfigProblem {
                key: "credential".into(),
                env: "AZURE_FEDERATED_TOKEN_FILE".into(),
                problem: "workload-identity needs the federated token file".into(),
                fix: "run where workload identity injects AZURE_FEDERATED_TOKEN_FILE, or choose another credential".into(),
            })
        }
        _ => {}
    }
    if (client_secret_name.is_some() || client_cert_name.is_some()) && keyvault_url.is_none() {
        p.push(problem(
            "keyvault_url",
            "a Key Vault secret name is set but no vault",
            "set DORMANT_KEYVAULT_URL=https://<vault>.vault.azure.net",
        ));
    }

    let graph_url = parse_https(
        "graph_url",
        raw.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH_URL),
        &mut p,
    );
    let authority_host = parse_https(
        "authority_host",
        raw.authority_host
            .as_deref()
            .unwrap_or(DEFAULT_AUTHORITY_HOST),
        &mut p,
    );

    let ca_file = raw
        .ca_file
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &ca_file {
        check_ca_file(path, &mut p);
    }

    let graph_budget_share = raw.graph_budget_share.unwrap_or(0.5);
    if !(graph_budget_share > 0.0 && graph_budget_share <= 1.0) {
        p.push(problem(
            "graph_budget_share",
            format!("{graph_budget_share} is not a share in (0, 1]"),
            "use 0.5 (the default) or the fraction of the app's Graph budget this deployment may use",
        ));
    }

    let storage = storage_settings(&raw, sources, &mut p);
    let gdpr = gdpr_settings(&raw, tenant_kind, &mut p);
    let (attest_key_name, public_url) = attest_settings(&raw, keyvault_url.is_some(), &mut p);
    let policy = policy(raw.policy, tenant_kind, &mut p);

    if !p.is_empty() {
        return Err(ConfigError(p));
    }
    Ok(Config {
        tenant_id,
        tenant_kind,
        client_id: client_id.map(str::to_ascii_lowercase),
        credential,
        client_secret: raw.client_secret,
        keyvault_url,
        client_secret_name,
        client_cert_name,
        graph_url: graph_url.expect("problems would have returned"),
        authority_host: authority_host.expect("problems would have returned"),
        ca_file,
        graph_budget_share,
        exchange_url,
        storage,
        gdpr,
        attest_key: raw.attest_key,
        attest_key_name,
        public_url,
        policy: policy.expect("problems would have returned"),
    })
}

/// The attestation key's source and the links' public base.
fn attest_settings(
    raw: &RawConfig,
    has_vault: bool,
    p: &mut Vec<ConfigProblem>,
) -> (Option<String>, Option<Url>) {
    use secrecy::ExposeSecret as _;
    if raw
        .attest_key
        .as_ref()
        .is_some_and(|k| k.expose_secret().len() < MIN_ATTEST_KEY_LEN)
    {
        p.push(problem(
            "attest_key",
            format!("is shorter than {MIN_ATTEST_KEY_LEN} characters"),
            "use a random key of at least 32 characters (e.g. `openssl rand -base64 48`), or DORMANT_ATTEST_KEY_NAME to read it from Key Vault",
        ));
    }
    let name = raw
        .attest_key_name
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if name.is_some() && !has_vault {
        p.push(problem(
            "attest_key_name",
            "a Key Vault secret name is set but no vault",
            "set DORMANT_KEYVAULT_URL=https://<vault>.vault.azure.net",
        ));
    }
    let public_url = raw
        .public_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|u| match Url::parse(u) {
            Ok(url)
                if url.host().is_some()
                    && url.query().is_none()
                    && (url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url))) =>
            {
                Some(url)
            }
            _ => {
                p.push(problem(
                    "public_url",
                    "is not an https:// address without a query",
                    "give the function app's public address, e.g. https://dormant-func.azurewebsites.net",
                ));
                None
            }
        });
    (name, public_url)
}

fn is_domain(text: &str) -> bool {
    text.contains('.')
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

fn check_ca_file(path: &Path, p: &mut Vec<ConfigProblem>) {
    let fix = "point it at a PEM file holding the root CA certificate(s) to trust";
    match std::fs::read(path) {
        Err(e) => p.push(problem(
            "ca_file",
            format!("cannot read {}: {e}", path.display()),
            fix,
        )),
        Ok(bytes) => {
            let certs = rustls_pemfile::certs(&mut bytes.as_slice())
                .filter_map(Result::ok)
                .count();
            if certs == 0 {
                p.push(problem(
                    "ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                    fix,
                ));
            }
        }
    }
}

/// Storage as the Functions host chooses it (the store's own rules), with
/// `store_dir` from the file as the fallback for `DORMANT_STORE_DIR`.
fn storage_settings(
    raw: &RawConfig,
    sources: &Sources,
    p: &mut Vec<ConfigProblem>,
) -> StorageConfig {
    let lookup = |key: &str| match sources.var(key) {
        Some(v) => Some(v.to_owned()),
        None if key == STORE_DIR_SETTING => raw.store_dir.clone(),
        None => None,
    };
    match StorageConfig::from_lookup(lookup) {
        Ok(storage) => storage,
        Err(e) => {
            let env = if sources.var(CONNECTION_SETTING).is_some() {
                CONNECTION_SETTING
            } else if sources.var(BLOB_URI_SETTING).is_some()
                && sources.var(QUEUE_URI_SETTING).is_none()
            {
                QUEUE_URI_SETTING
            } else {
                BLOB_URI_SETTING
            };
            p.push(ConfigProblem {
                key: "storage".into(),
                env: env.into(),
                problem: e.to_string(),
                fix: "give a storage connection string (UseDevelopmentStorage=true for Azurite), or both managed-identity service URIs, or neither to use the local store".into(),
            });
            StorageConfig::Local(PathBuf::from(DEFAULT_STORE_DIR))
        }
    }
}

fn gdpr_settings(
    raw: &RawConfig,
    tenant_kind: TenantKind,
    p: &mut Vec<ConfigProblem>,
) -> Option<Gdpr> {
    let given = [
        ("gdpr_issuer", &raw.gdpr_issuer),
        ("gdpr_audience", &raw.gdpr_audience),
        ("gdpr_metadata_url", &raw.gdpr_metadata_url),
    ];
    let set: Vec<_> = given
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|s| !s.trim().is_empty()))
        .collect();
    if set.is_empty() {
        return None;
    }
    if set.len() < given.len() {
        for (key, v) in given {
            if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
                p.push(problem(
                    key,
                    "is required once any GDPR setting is set",
                    "set DORMANT_GDPR_ISSUER, DORMANT_GDPR_AUDIENCE and DORMANT_GDPR_METADATA_URL together",
                ));
            }
        }
        return None;
    }
    let max_auth_age_secs = raw.gdpr_max_auth_age_secs.unwrap_or(600);
    if max_auth_age_secs == 0 || max_auth_age_secs > 86_400 {
        p.push(problem(
            "gdpr_max_auth_age_secs",
            "must be between 1 and 86400 seconds",
            "use the default 600 (a fresh sign-in within 10 minutes)",
        ));
    }
    let issuer = raw
        .gdpr_issuer
        .clone()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let policies = gdpr_policies(raw, tenant_kind, &issuer, p);
    let metadata_url = parse_https(
        "gdpr_metadata_url",
        raw.gdpr_metadata_url.as_deref().unwrap_or_default(),
        p,
    )?;
    Some(Gdpr {
        issuer,
        audience: raw
            .gdpr_audience
            .clone()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        metadata_url,
        max_auth_age_secs,
        policies,
    })
}

/// `gdpr_policies`, required for a B2C issuer: all of a B2C tenant's user
/// flows sign for the same audience with the same keys, so without the
/// list a token from a sign-up or password-reset flow would pass too. B2C
/// is the tenant kind, or an issuer on `*.b2clogin.com` (a B2C custom
/// domain is recognised by the tenant kind only).
fn gdpr_policies(
    raw: &RawConfig,
    tenant_kind: TenantKind,
    issuer: &str,
    p: &mut Vec<ConfigProblem>,
) -> Vec<String> {
    let mut policies: Vec<String> = Vec::new();
    for (i, name) in raw.gdpr_policies.iter().flatten().enumerate() {
        let name = name.trim();
        // B2C policy ids: letters, digits, `_` and `-` (`B2C_1A_signup_signin`).
        let legal = !name.is_empty()
            && name.len() <= 256
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !legal {
            p.push(problem(
                "gdpr_policies",
                format!("entry {} is not a user flow or policy name", i + 1),
                "list the names as the B2C portal shows them, e.g. B2C_1_signupsignin or B2C_1A_signup_signin",
            ));
        } else if !policies.iter().any(|q| q.eq_ignore_ascii_case(name)) {
            policies.push(name.to_owned());
        }
    }
    let b2c_host = Url::parse(issuer).ok().is_some_and(|u| {
        u.host_str()
            .is_some_and(|h| h.to_ascii_lowercase().ends_with(".b2clogin.com"))
    });
    if policies.is_empty() && (tenant_kind == TenantKind::B2c || b2c_host) {
        p.push(problem(
            "gdpr_policies",
            "is required when the GDPR token issuer is Azure AD B2C: every user flow of the tenant signs tokens the endpoints would otherwise accept",
            "name the user flows / custom policies whose tokens may call the GDPR endpoints, e.g. DORMANT_GDPR_POLICIES=B2C_1_signupsignin (comma-separated), or gdpr_policies = [\"B2C_1_signupsignin\"] in dormant.toml",
        ));
    }
    policies
}

fn users(key: &str, given: Option<Vec<String>>, p: &mut Vec<ConfigProblem>) -> Vec<UserRef> {
    let mut out = Vec::new();
    for (i, entry) in given.unwrap_or_default().iter().enumerate() {
        match UserRef::parse(entry) {
            Some(u) => out.push(u),
            None => p.push(problem(
                key,
                format!("entry {} is neither an object id nor a UPN", i + 1),
                "list object ids (GUIDs) or user principal names (name@domain)",
            )),
        }
    }
    out.sort();
    out.dedup();
    out
}

fn pattern(key: &str, given: Option<&str>, default: &str, p: &mut Vec<ConfigProblem>) -> Regex {
    let text = given.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    Regex::new(text).unwrap_or_else(|e| {
        p.push(problem(
            key,
            format!("is not a valid regular expression ({e})"),
            "fix the pattern (Rust regex syntax; (?i) for case-insensitive)",
        ));
        Regex::new(default).expect("the default patterns compile")
    })
}

fn guests(raw: RawGuests, p: &mut Vec<ConfigProblem>) -> Guests {
    let defaults = Guests::default();
    let pending_after_days = raw
        .pending_after_days
        .unwrap_or(defaults.pending_after_days);
    if !(1..=3650).contains(&pending_after_days) {
        p.push(problem(
            "policy.guests.pending_after_days",
            format!("{pending_after_days} is not between 1 and 3650 days"),
            "give invitees some days to accept (30 is the default)",
        ));
    }
    let inactive_after_days = raw
        .inactive_after_days
        .unwrap_or(defaults.inactive_after_days);
    if !(30..=3650).contains(&inactive_after_days) {
        p.push(problem(
            "policy.guests.inactive_after_days",
            format!("{inactive_after_days} is not between 30 and 3650 days"),
            "set it to 30 or more (sign-in data can lag and guests come and go)",
        ));
    }
    let unmanaged = match raw.unmanaged.as_deref().map(str::trim) {
        None | Some("report") => UnmanagedGuests::Report,
        Some("reset") => UnmanagedGuests::Reset,
        Some(other) => {
            p.push(problem(
                "policy.guests.unmanaged",
                format!("{other:?} is neither \"report\" nor \"reset\""),
                "use \"report\" (list them) or \"reset\" (reset their redemption in enforce mode)",
            ));
            UnmanagedGuests::Report
        }
    };
    Guests {
        pending_after_days,
        inactive_after_days,
        unmanaged,
        send_invitation_message: raw
            .send_invitation_message
            .unwrap_or(defaults.send_invitation_message),
    }
}

fn policy(raw: RawPolicy, kind: TenantKind, p: &mut Vec<ConfigProblem>) -> Option<Policy> {
    let before = p.len();
    let mode = match raw.mode.as_deref().map(str::trim) {
        None | Some("report") => Mode::Report,
        Some("enforce") => Mode::Enforce,
        Some(other) => {
            p.push(problem(
                "policy.mode",
                format!("{other:?} is not a mode"),
                "use \"report\" (nothing changes) or \"enforce\"",
            ));
            Mode::Report
        }
    };
    let inactive_after_days = raw.inactive_after_days.unwrap_or(90);
    if inactive_after_days < 30 {
        p.push(problem(
            "policy.inactive_after_days",
            format!("{inactive_after_days} is below the minimum of 30 days"),
            "set it to 30 or more (sign-in data can lag and people take holidays)",
        ));
    }
    if inactive_after_days > 3650 {
        p.push(problem(
            "policy.inactive_after_days",
            format!("{inactive_after_days} is more than ten years"),
            "set a number of days between 30 and 3650",
        ));
    }
    let never_signed_in_grace_days = raw.never_signed_in_grace_days.unwrap_or(30);

    let default_sources: &[&str] = match kind {
        TenantKind::Workforce => &["signin", "usage-report"],
        TenantKind::B2c => &["signin"],
    };
    let source_names = raw
        .activity_sources
        .unwrap_or_else(|| default_sources.iter().map(|s| s.to_string()).collect());
    let mut activity_sources = Vec::new();
    for name in &source_names {
        match name.trim() {
            "signin" => activity_sources.push(ActivitySource::SignIn),
            "usage-report" if kind == TenantKind::B2c => p.push(problem(
                "policy.activity_sources",
                "B2C tenants have no Microsoft 365 usage report",
                "use [\"signin\"] for a b2c tenant",
            )),
            "usage-report" => activity_sources.push(ActivitySource::UsageReport),
            other => p.push(problem(
                "policy.activity_sources",
                format!("{other:?} is not an activity source"),
                "use \"signin\" and, for workforce tenants, \"usage-report\"",
            )),
        }
    }
    activity_sources.sort();
    activity_sources.dedup();
    if !activity_sources.contains(&ActivitySource::SignIn) && !source_names.is_empty() {
        p.push(problem(
            "policy.activity_sources",
            "\"signin\" is missing: without sign-in data every user would look inactive",
            "include \"signin\"",
        ));
    } else if source_names.is_empty() {
        p.push(problem(
            "policy.activity_sources",
            "is empty",
            "include \"signin\"",
        ));
    }

    let mut exclude_groups = Vec::new();
    for (i, g) in raw.exclude_groups.unwrap_or_default().iter().enumerate() {
        match Uuid::parse_str(g.trim()) {
            Ok(id) => exclude_groups.push(id),
            Err(_) => p.push(problem(
                "policy.exclude_groups",
                format!("entry {} is not a group object id", i + 1),
                "list group object ids (GUIDs)",
            )),
        }
    }
    let exclude_users = users("policy.exclude_users", raw.exclude_users, p);
    let break_glass = users("policy.break_glass", raw.break_glass, p);
    let executive_title_pattern = pattern(
        "policy.executive_title_pattern",
        raw.executive_title_pattern.as_deref(),
        DEFAULT_EXECUTIVE_TITLE,
        p,
    );
    let service_account_upn_pattern = pattern(
        "policy.service_account_upn_pattern",
        raw.service_account_upn_pattern.as_deref(),
        DEFAULT_SERVICE_ACCOUNT_UPN,
        p,
    );

    let ph = raw.phases;
    let d = Phases::default();
    let phases = Phases {
        notify: ph.notify.unwrap_or(d.notify),
        disable: ph.disable.unwrap_or(d.disable),
        convert_mailbox: ph.convert_mailbox.unwrap_or(d.convert_mailbox),
        remove_licenses: ph.remove_licenses.unwrap_or(d.remove_licenses),
        delete: ph.delete.unwrap_or(d.delete),
        purge: ph.purge,
    };
    let order = [
        ("notify", phases.notify),
        ("disable", phases.disable),
        ("convert_mailbox", phases.convert_mailbox),
        ("remove_licenses", phases.remove_licenses),
        ("delete", phases.delete),
    ];
    for pair in order.windows(2) {
        let ((a, da), (b, db)) = (pair[0], pair[1]);
        if db < da {
            p.push(problem(
                &format!("policy.phases.{b}"),
                format!("day {db} comes before {a} (day {da})"),
                "keep the order notify ≤ disable ≤ convert_mailbox ≤ remove_licenses ≤ delete (licenses removed before the mailbox is shared lose mail)",
            ));
        }
    }
    if phases.delete < phases.remove_licenses.saturating_add(30) {
        p.push(problem(
            "policy.phases.delete",
            format!(
                "day {} leaves less than 30 days after remove_licenses (day {})",
                phases.delete, phases.remove_licenses
            ),
            "set delete at least 30 days after remove_licenses, the retention window that keeps the mailbox recoverable",
        ));
    }
    if let Some(purge) = phases.purge
        && purge < phases.delete
    {
        p.push(problem(
            "policy.phases.purge",
            format!("day {purge} comes before delete (day {})", phases.delete),
            "set purge after delete, or leave it unset so deleted users stay restorable for 30 days",
        ));
    }

    let q = raw.quarantine;
    let quarantine = Quarantine {
        max_new_cases: q.max_new_cases.unwrap_or(500),
        max_percent: q.max_percent.unwrap_or(5.0),
        unknown_growth: q.unknown_growth.unwrap_or(2.0),
        unknown_min_percent: q.unknown_min_percent.unwrap_or(5.0),
        new_cases_growth: q.new_cases_growth.unwrap_or(3.0),
        new_cases_min: q.new_cases_min.unwrap_or(50),
    };
    if quarantine.max_new_cases == 0 {
        p.push(problem(
            "policy.quarantine.max_new_cases",
            "0 would quarantine every run",
            "set a positive number of cases (default 500)",
        ));
    }
    if !(quarantine.max_percent > 0.0 && quarantine.max_percent <= 100.0) {
        p.push(problem(
            "policy.quarantine.max_percent",
            format!("{} is not a percentage above 0", quarantine.max_percent),
            "set a number in (0, 100] (default 5)",
        ));
    }
    for (key, growth) in [
        (
            "policy.quarantine.unknown_growth",
            quarantine.unknown_growth,
        ),
        (
            "policy.quarantine.new_cases_growth",
            quarantine.new_cases_growth,
        ),
    ] {
        if !(growth.is_finite() && growth >= 1.0) {
            p.push(problem(
                key,
                format!("{growth} is not a growth factor of at least 1"),
                "set a factor of 1 or more (defaults: 2 for the unknown share, 3 for new cases)",
            ));
        }
    }
    if !(0.0..=100.0).contains(&quarantine.unknown_min_percent) {
        p.push(problem(
            "policy.quarantine.unknown_min_percent",
            format!("{} is not a percentage", quarantine.unknown_min_percent),
            "set a number in [0, 100] (default 5)",
        ));
    }

    let n = raw.notify;
    let mail_from = n
        .mail_from
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty());
    if let Some(m) = &mail_from
        && !matches!(UserRef::parse(m), Some(UserRef::Upn(_)))
    {
        p.push(problem(
            "policy.notify.mail_from",
            "is not a mailbox address",
            "name the mailbox Graph sendMail sends from (name@domain)",
        ));
    }
    let webhook = n
        .webhook
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|w| match Url::parse(w) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => Some(u),
            _ => {
                p.push(problem(
                    "policy.notify.webhook",
                    "is not an https:// URL",
                    "give the https endpoint that receives notifications",
                ));
                None
            }
        });
    if webhook.is_some() && n.webhook_secret.is_none() {
        p.push(problem(
            "policy.notify.webhook_secret",
            "a webhook is set without the secret that signs its body",
            "set DORMANT_POLICY__NOTIFY__WEBHOOK_SECRET (a Key Vault reference is fine)",
        ));
    }
    if mode == Mode::Enforce && mail_from.is_none() && webhook.is_none() {
        p.push(problem(
            "policy.notify",
            "enforce mode needs a way to tell people before their account is disabled",
            "set policy.notify.mail_from and/or policy.notify.webhook",
        ));
    }

    let guests = guests(raw.guests, p);
    let keep_days = raw.attest.keep_days.unwrap_or(180);
    if !(1..=3650).contains(&keep_days) {
        p.push(problem(
            "policy.attest.keep_days",
            format!("{keep_days} is not between 1 and 3650 days"),
            "set how many days an owner's \"keep\" holds the account (default 180)",
        ));
    }

    (p.len() == before).then_some(Policy {
        mode,
        inactive_after_days,
        never_signed_in_grace_days,
        activity_sources,
        exclude_groups,
        exclude_users,
        break_glass,
        executive_title_pattern,
        service_account_upn_pattern,
        phases,
        quarantine,
        notify: Notify {
            mail_from,
            webhook,
            webhook_secret: n.webhook_secret,
        },
        guests,
        attest: Attest { keep_days },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    const TENANT: &str = "8f0c2d2e-1111-4c4c-9d9d-123456789abc";
    const CLIENT: &str = "0b1c2d3e-2222-4d4d-8e8e-abcdefabcdef";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("DORMANT_TENANT_ID", TENANT)];
        all.extend_from_slice(pairs);
        Config::load(&Sources {
            file: None,
            file_required: false,
            env: env(&all),
        })
    }

    fn load_toml(toml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dormant.toml");
        std::fs::write(&path, toml).expect("write toml");
        Config::load(&Sources::from_env(Some(path), env(pairs)))
    }

    #[track_caller]
    fn rejects(pairs: &[(&str, &str)], key: &str) -> ConfigProblem {
        let err = load(pairs).expect_err("configuration should be rejected");
        let found = err.0.iter().find(|p| p.key == key).cloned();
        found.unwrap_or_else(|| panic!("no problem for {key}: {err}"))
    }

    #[test]
    fn defaults_are_the_contract_defaults() {
        let c = load(&[]).expect("minimal config loads");
        assert_eq!(c.tenant_kind, TenantKind::Workforce);
        assert_eq!(c.credential, CredentialKind::ManagedIdentity);
        assert_eq!(c.graph_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(
            c.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        let p = &c.policy;
        assert_eq!(p.mode, Mode::Report, "report mode is the default");
        assert_eq!(p.inactive_after_days, 90);
        assert_eq!(p.never_signed_in_grace_days, 30);
        assert_eq!(
            p.activity_sources,
            vec![ActivitySource::SignIn, ActivitySource::UsageReport]
        );
        assert_eq!(
            p.phases,
            Phases {
                notify: 0,
                disable: 14,
                convert_mailbox: 14,
                remove_licenses: 21,
                delete: 51,
                purge: None
            }
        );
        assert_eq!(p.quarantine.max_new_cases, 500);
        assert_eq!(p.quarantine.max_percent, 5.0);
        assert!(
            matches!(c.storage, StorageConfig::Local(ref d) if d == Path::new(DEFAULT_STORE_DIR))
        );
        assert!(c.gdpr.is_none());
        assert_eq!(p.attest.keep_days, 180);
        assert!(c.attest_key.is_none() && c.attest_key_name.is_none() && c.public_url.is_none());
    }

    #[test]
    fn attestation_settings_are_checked_and_name_their_keys() {
        let c = load(&[
            ("DORMANT_POLICY__ATTEST__KEEP_DAYS", "30"),
            ("DORMANT_ATTEST_KEY", "0123456789abcdef0123456789abcdef"),
            (
                "DORMANT_PUBLIC_URL",
                "https://dormant-func.azurewebsites.net",
            ),
        ])
        .expect("loads");
        assert_eq!(c.policy.attest.keep_days, 30);
        assert_eq!(
            c.public_url.as_ref().map(Url::as_str),
            Some("https://dormant-func.azurewebsites.net/")
        );
        let toml = format!("tenant_id = \"{TENANT}\"\n[policy.attest]\nkeep_days = 90\n");
        assert_eq!(
            load_toml(&toml, &[])
                .expect("loads")
                .policy
                .attest
                .keep_days,
            90
        );
        for bad in ["0", "3651"] {
            let p = rejects(
                &[("DORMANT_POLICY__ATTEST__KEEP_DAYS", bad)],
                "policy.attest.keep_days",
            );
            assert_eq!(p.env, "DORMANT_POLICY__ATTEST__KEEP_DAYS");
        }
        assert!(load(&[("DORMANT_POLICY__ATTEST__KEEP_DAYS", "3650")]).is_ok());
        let short = "too-short-key";
        let p = rejects(&[("DORMANT_ATTEST_KEY", short)], "attest_key");
        assert_eq!(p.env, "DORMANT_ATTEST_KEY");
        assert!(!p.to_string().contains(short), "{p}");
        let p = rejects(&[("DORMANT_ATTEST_KEY_NAME", "k")], "attest_key_name");
        assert_eq!(p.env, "DORMANT_ATTEST_KEY_NAME");
        for bad in [
            "http://dormant.example.com",
            "not a url",
            "https://x.example/?a=b",
        ] {
            rejects(&[("DORMANT_PUBLIC_URL", bad)], "public_url");
        }
        let shown = format!(
            "{:?}",
            load(&[(
                "DORMANT_ATTEST_KEY",
                "a-secret-attest-key-that-is-long-enough"
            )])
            .expect("loads")
        );
        assert!(!shown.contains("a-secret-attest-key"), "{shown}");
    }

    #[test]
    fn env_overrides_toml_and_nests_with_double_underscore() {
        let toml = format!(
            "tenant_id = \"{TENANT}\"\n[policy]\ninactive_after_days = 100\nmode = \"report\"\n[policy.phases]\ndisable = 10\n"
        );
        let c = load_toml(
            &toml,
            &[
                ("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "120"),
                ("DORMANT_POLICY__PHASES__NOTIFY", "2"),
            ],
        )
        .expect("loads");
        assert_eq!(c.policy.inactive_after_days, 120, "env wins over the file");
        assert_eq!(c.policy.phases.disable, 10, "file value kept");
        assert_eq!(c.policy.phases.notify, 2, "nested env key");
    }

    #[test]
    fn lists_from_env_as_array_or_comma_text() {
        let g1 = "11111111-1111-1111-1111-111111111111";
        let c = load(&[
            (
                "DORMANT_POLICY__EXCLUDE_USERS",
                "Alice@Contoso.com, 22222222-2222-2222-2222-222222222222",
            ),
            ("DORMANT_POLICY__EXCLUDE_GROUPS", &format!("[{g1}]")),
        ])
        .expect("loads");
        assert_eq!(c.policy.exclude_users.len(), 2);
        assert!(
            c.policy
                .exclude_users
                .contains(&UserRef::Upn("alice@contoso.com".into()))
        );
        assert_eq!(
            c.policy.exclude_groups,
            vec![Uuid::parse_str(g1).expect("uuid")]
        );
    }

    #[test]
    fn tenant_id_is_required_and_checked() {
        let err = Config::load(&Sources::from_env(None, vec![])).expect_err("required");
        assert_eq!(err.0[0].key, "tenant_id");
        assert_eq!(err.0[0].env, "DORMANT_TENANT_ID");
        assert!(load(&[("DORMANT_TENANT_ID", "contoso.onmicrosoft.com")]).is_ok());
        rejects(&[("DORMANT_TENANT_ID", "not a tenant")], "tenant_id");
    }

    #[test]
    fn each_rule_names_its_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("DORMANT_TENANT_KIND", "consumer")], "tenant_kind"),
            (&[("DORMANT_CREDENTIAL", "password")], "credential"),
            (&[("DORMANT_CREDENTIAL", "client-secret")], "client_id"),
            (&[("DORMANT_CLIENT_ID", "app")], "client_id"),
            (
                &[
                    ("DORMANT_CREDENTIAL", "client-secret"),
                    ("DORMANT_CLIENT_ID", CLIENT),
                ],
                "client_secret",
            ),
            (
                &[
                    ("DORMANT_CREDENTIAL", "client-certificate"),
                    ("DORMANT_CLIENT_ID", CLIENT),
                ],
                "client_cert_name",
            ),
            (
                &[
                    ("DORMANT_CREDENTIAL", "workload-identity"),
                    ("DORMANT_CLIENT_ID", CLIENT),
                ],
                "credential",
            ),
            (&[("DORMANT_CLIENT_SECRET_NAME", "s")], "keyvault_url"),
            (
                &[("DORMANT_KEYVAULT_URL", "http://vault.local")],
                "keyvault_url",
            ),
            (
                &[("DORMANT_GRAPH_URL", "http://graph.microsoft.com")],
                "graph_url",
            ),
            (&[("DORMANT_AUTHORITY_HOST", "::")], "authority_host"),
            (&[("DORMANT_CA_FILE", "/nonexistent/ca.pem")], "ca_file"),
            (
                &[("DORMANT_GRAPH_BUDGET_SHARE", "1.5")],
                "graph_budget_share",
            ),
            (&[("DORMANT_GRAPH_BUDGET_SHARE", "0")], "graph_budget_share"),
            (
                &[("DORMANT_GDPR_ISSUER", "https://issuer")],
                "gdpr_audience",
            ),
            (
                &[
                    ("DORMANT_GDPR_ISSUER", "https://issuer"),
                    ("DORMANT_GDPR_AUDIENCE", CLIENT),
                    (
                        "DORMANT_GDPR_METADATA_URL",
                        "https://issuer/.well-known/openid-configuration",
                    ),
                    ("DORMANT_GDPR_MAX_AUTH_AGE_SECS", "0"),
                ],
                "gdpr_max_auth_age_secs",
            ),
            (&[("DORMANT_POLICY__MODE", "yolo")], "policy.mode"),
            (
                &[("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "29")],
                "policy.inactive_after_days",
            ),
            (
                &[("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "ninety")],
                "policy.inactive_after_days",
            ),
            (
                &[("DORMANT_POLICY__ACTIVITY_SOURCES", "signin,telepathy")],
                "policy.activity_sources",
            ),
            (
                &[("DORMANT_POLICY__ACTIVITY_SOURCES", "usage-report")],
                "policy.activity_sources",
            ),
            (
                &[
                    ("DORMANT_TENANT_KIND", "b2c"),
                    ("DORMANT_POLICY__ACTIVITY_SOURCES", "signin,usage-report"),
                ],
                "policy.activity_sources",
            ),
            (
                &[("DORMANT_POLICY__EXCLUDE_GROUPS", "finance")],
                "policy.exclude_groups",
            ),
            (
                &[("DORMANT_POLICY__EXCLUDE_USERS", "bob")],
                "policy.exclude_users",
            ),
            (
                &[("DORMANT_POLICY__BREAK_GLASS", ".x@contoso.com")],
                "policy.break_glass",
            ),
            (
                &[("DORMANT_POLICY__EXECUTIVE_TITLE_PATTERN", "(")],
                "policy.executive_title_pattern",
            ),
            (
                &[("DORMANT_POLICY__SERVICE_ACCOUNT_UPN_PATTERN", "[")],
                "policy.service_account_upn_pattern",
            ),
            (
                &[("DORMANT_POLICY__PHASES__DISABLE", "20")],
                "policy.phases.convert_mailbox",
            ),
            (
                &[("DORMANT_POLICY__PHASES__REMOVE_LICENSES", "10")],
                "policy.phases.remove_licenses",
            ),
            (
                &[("DORMANT_POLICY__PHASES__DELETE", "40")],
                "policy.phases.delete",
            ),
            (
                &[("DORMANT_POLICY__PHASES__PURGE", "10")],
                "policy.phases.purge",
            ),
            (
                &[("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "0")],
                "policy.quarantine.max_new_cases",
            ),
            (
                &[("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "150")],
                "policy.quarantine.max_percent",
            ),
            (
                &[("DORMANT_POLICY__NOTIFY__MAIL_FROM", "not-an-address")],
                "policy.notify.mail_from",
            ),
            (
                &[("DORMANT_POLICY__NOTIFY__WEBHOOK", "http://example.com/hook")],
                "policy.notify.webhook",
            ),
            (
                &[(
                    "DORMANT_POLICY__NOTIFY__WEBHOOK",
                    "https://example.com/hook",
                )],
                "policy.notify.webhook_secret",
            ),
            (&[("DORMANT_POLICY__MODE", "enforce")], "policy.notify"),
            (
                &[("DORMANT_POLICY__INACTIVE_AFTER_DAY", "120")],
                "policy.inactive_after_day",
            ),
        ];
        for (pairs, key) in cases {
            let p = rejects(pairs, key);
            if p.env != "AZURE_FEDERATED_TOKEN_FILE" {
                assert_eq!(p.env, env_name(key), "{key}");
            }
            assert!(!p.fix.is_empty() && !p.problem.is_empty(), "{key}: {p}");
        }
    }

    #[test]
    fn a_misspelt_key_in_the_file_is_named_with_its_source() {
        let toml = format!("tenant_id = \"{TENANT}\"\n[policy]\ninactive_afterdays = 100\n");
        let err = load_toml(&toml, &[]).expect_err("unknown key");
        assert_eq!(err.0[0].key, "policy.inactive_afterdays");
        assert!(err.0[0].fix.contains("inactive_after_days"), "{err}");
    }

    #[test]
    fn a_toml_syntax_error_names_the_line_not_the_content() {
        let err = load_toml("tenant_id = \"abc\nclient_secret = \"hunter2\"\n", &[])
            .expect_err("syntax error");
        let text = err.to_string();
        assert!(text.contains("line"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&[
            ("DORMANT_POLICY__MODE", "x"),
            ("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "1"),
        ])
        .expect_err("two problems");
        let keys = err.keys();
        assert!(keys.contains(&"policy.mode") && keys.contains(&"policy.inactive_after_days"));
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let err = Config::load(&Sources::from_env(
            Some(PathBuf::from("/nonexistent/dormant.toml")),
            env(&[("DORMANT_TENANT_ID", TENANT)]),
        ))
        .expect_err("missing file");
        assert_eq!(err.0[0].env, "DORMANT_CONFIG");
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let secret = "s3cr3t-Value~that-must-not-leak";
        let c = load(&[
            ("DORMANT_CREDENTIAL", "client-secret"),
            ("DORMANT_CLIENT_ID", CLIENT),
            ("DORMANT_CLIENT_SECRET", secret),
            (
                "AzureWebJobsStorage",
                "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5",
            ),
        ])
        .expect("loads");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(secret) && !shown.contains("c2VjcmV0a2V5"),
            "{shown}"
        );
        assert_eq!(
            c.client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some(secret.to_owned())
        );
        // A secret given where a number is expected is not echoed either.
        let err = load(&[("DORMANT_POLICY__INACTIVE_AFTER_DAYS", secret)]).expect_err("bad type");
        assert!(!err.to_string().contains(secret), "{err}");
    }

    #[test]
    fn storage_settings_follow_the_functions_conventions() {
        let c = load(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).expect("loads");
        assert!(matches!(c.storage, StorageConfig::ConnectionString(_)));
        let c = load(&[
            (
                "AzureWebJobsStorage__blobServiceUri",
                "https://acct.blob.core.windows.net",
            ),
            (
                "AzureWebJobsStorage__queueServiceUri",
                "https://acct.queue.core.windows.net",
            ),
        ])
        .expect("loads");
        assert!(matches!(c.storage, StorageConfig::ManagedIdentity { .. }));
        let err = load(&[(
            "AzureWebJobsStorage__blobServiceUri",
            "https://acct.blob.core.windows.net",
        )])
        .expect_err("half a managed identity");
        assert_eq!(err.0[0].env, "AzureWebJobsStorage__queueServiceUri");
        let c = load(&[("DORMANT_STORE_DIR", "/tmp/x")]).expect("loads");
        assert!(matches!(c.storage, StorageConfig::Local(ref d) if d == Path::new("/tmp/x")));
    }

    fn gdpr_env(issuer: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("DORMANT_GDPR_ISSUER", issuer),
            ("DORMANT_GDPR_AUDIENCE", CLIENT),
            (
                "DORMANT_GDPR_METADATA_URL",
                "https://issuer.example/.well-known/openid-configuration",
            ),
        ]
    }

    #[test]
    fn gdpr_policies_are_required_when_the_issuer_is_b2c() {
        let b2c_host = "https://contoso.b2clogin.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0/";
        let custom_domain = "https://login.contoso.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0/";
        let mut by_kind = gdpr_env(custom_domain);
        by_kind.push(("DORMANT_TENANT_KIND", "b2c"));
        for (why, pairs) in [
            ("b2clogin.com issuer", gdpr_env(b2c_host)),
            ("b2c tenant", by_kind),
        ] {
            let p = rejects(&pairs, "gdpr_policies");
            assert_eq!(p.env, "DORMANT_GDPR_POLICIES", "{why}");
            assert!(p.fix.contains("DORMANT_GDPR_POLICIES=B2C_1_"), "{why}: {p}");
        }
        // Reported with the other problems, not instead of them.
        let mut two = gdpr_env(b2c_host);
        two.push(("DORMANT_GDPR_MAX_AUTH_AGE_SECS", "0"));
        let keys = load(&two).expect_err("two problems").keys().join(",");
        assert!(
            keys.contains("gdpr_policies") && keys.contains("gdpr_max_auth_age_secs"),
            "{keys}"
        );
        // An Entra issuer needs none.
        let entra =
            gdpr_env("https://login.microsoftonline.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0");
        let c = load(&entra).expect("loads");
        assert!(c.gdpr.expect("gdpr").policies.is_empty());
    }

    #[test]
    fn gdpr_policies_from_env_text_or_a_toml_array() {
        let b2c_host = "https://contoso.b2clogin.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0/";
        let mut pairs = gdpr_env(b2c_host);
        pairs.push((
            "DORMANT_GDPR_POLICIES",
            "B2C_1_signupsignin, B2C_1A_Signup_Signin,b2c_1_SIGNUPSIGNIN",
        ));
        let c = load(&pairs).expect("loads");
        assert_eq!(
            c.gdpr.expect("gdpr").policies,
            ["B2C_1_signupsignin", "B2C_1A_Signup_Signin"],
            "trimmed, duplicates (any case) once"
        );
        let toml = format!(
            "tenant_id = \"{TENANT}\"\ntenant_kind = \"b2c\"\ngdpr_issuer = \"{b2c_host}\"\ngdpr_audience = \"{CLIENT}\"\ngdpr_metadata_url = \"https://issuer.example/m\"\ngdpr_policies = [\"B2C_1_susi\"]\n"
        );
        let c = load_toml(&toml, &[]).expect("loads");
        assert_eq!(c.gdpr.expect("gdpr").policies, ["B2C_1_susi"]);
        let mut bad = gdpr_env(b2c_host);
        bad.push(("DORMANT_GDPR_POLICIES", "B2C_1_susi,not a policy"));
        let p = rejects(&bad, "gdpr_policies");
        assert!(p.problem.contains("entry 2"), "{p}");
        assert!(
            !p.to_string().contains("not a policy"),
            "the value is not echoed: {p}"
        );
    }

    #[test]
    fn b2c_defaults_to_signin_only() {
        let c = load(&[("DORMANT_TENANT_KIND", "b2c")]).expect("loads");
        assert_eq!(c.policy.activity_sources, vec![ActivitySource::SignIn]);
    }

    #[test]
    fn non_setting_dormant_variables_are_ignored() {
        let sources = Sources::from_env(
            None,
            env(&[
                ("DORMANT_TENANT_ID", TENANT),
                ("DORMANT_CONFIG", "/nonexistent"),
            ]),
        );
        Config::load(&sources).expect_err("DORMANT_CONFIG names a missing file");
        assert!(
            load(&[
                ("DORMANT_SIM_TRUTH", "/tmp/t"),
                ("DORMANT_TEST_AZURITE_BLOB", "x")
            ])
            .is_ok()
        );
    }

    #[test]
    fn a_valid_ca_file_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a pem").expect("write");
        rejects(
            &[("DORMANT_CA_FILE", path.to_str().expect("utf8"))],
            "ca_file",
        );
    }
}
