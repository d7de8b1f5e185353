//! A faithful simulator of the Microsoft Graph tenant dormant governs.
//!
//! Microsoft Graph and Key Vault cannot run on our machines, so `dormant sim`
//! (and the tests) serve a seeded tenant over HTTPS with its own CA: the token
//! endpoint, Key Vault secrets, Graph v1.0/beta users with `signInActivity`,
//! paging with expiring skiptokens, the filter subset and its refusals,
//! `$batch`, throttling, the usage report with its 302 and concealed names,
//! deleted items, invitations, audit logs, and an Exchange admin endpoint.
//! Behaviour follows Microsoft's documentation (see `FACTS.md`); code that
//! passes here must behave against the real service.
//!
//! Production code never imports this module.
//!
//! # Endpoints (one HTTPS origin, `https://127.0.0.1:<port>`)
//! * token authority: `POST /{tenant}/oauth2/v2.0/token` (client secret or
//!   assertion; scopes Graph, Key Vault, Exchange), `GET /{tenant}/v2.0/.well-known/openid-configuration`,
//!   `GET /{tenant}/discovery/v2.0/keys` (RS256 key of user ID tokens, for the GDPR endpoints)
//! * Key Vault: `GET /secrets/{name}[/{version}]?api-version=…` (401 challenge first)
//! * managed identity (App Service/Functions style): `GET /msi/token?api-version=2019-08-01&resource=…`
//!   with `X-IDENTITY-HEADER` (printed as `IDENTITY_ENDPOINT` / `IDENTITY_HEADER`)
//! * Graph `v1.0` and `beta`: `users` (list/get/patch/delete, `$select`, `$filter`,
//!   `$top`, `$count`, `$expand=manager`), `users/{id}/{revokeSignInSessions|assignLicense|manager|mailboxSettings|sendMail|memberOf|transitiveMemberOf[/microsoft.graph.directoryRole]}`,
//!   `subscribedSkus`, `groups[/{id}[/transitiveMembers|members]]`,
//!   `roleManagement/directory/{roleAssignments|roleEligibilityScheduleInstances|roleDefinitions}`,
//!   `directory/deletedItems/microsoft.graph.user`, `directory/deletedItems/{id}[/restore]`,
//!   `reports/getOffice365ActiveUserDetail(period='D7|D30|D90|D180')` (302 → `/_download/{token}`),
//!   `admin/reportSettings`, `invitations`, `auditLogs/directoryAudits`, `organization[/{id}]`, `$batch`
//! * `GET /common/userrealm?user=…&api-version=2.1` (unauthenticated)
//! * Exchange admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` (`Get-Mailbox`, `Set-Mailbox -Type Shared`)
//! * control (not Graph): `/_sim/stats` (GET, DELETE = reset), `/_sim/clock[/advance]`, `/_sim/faults`, `/_sim/throttle`,
//!   `/_sim/mail`, `/_sim/secret/rotate`, `/_sim/token-lifetime`, `/_sim/report-settings`,
//!   `/_sim/users/{id}/{signin|usage|reenable-by-person|id-token}`

mod auth;
mod clock;
mod control;
mod graph;
mod http;
mod ids;
mod odata;
mod report;
mod server;
mod tenant;
mod throttle;
mod tls;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use clock::SimClock;
pub use report::COLUMNS as USAGE_REPORT_COLUMNS;
pub use server::{CapturedMail, Faults, StatsSnapshot};
pub use tenant::{Archetype, Quirk, Tenant, TenantKind, UserRec};
pub use throttle::ThrottleConfig;

/// `dormant sim` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct SimArgs {
    /// Number of users in the simulated tenant (10 to 1,000,000).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Workforce (Entra ID) or B2C tenant.
    #[arg(long, value_enum, default_value_t = TenantKind::Workforce)]
    pub kind: TenantKind,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Seed: the same seed (and --start) gives the same tenant. Random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for the CA certificate and the ground-truth file (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Simulated "now" at start (RFC 3339); default the real time.
    #[arg(long)]
    pub start: Option<DateTime<Utc>>,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3599)]
    pub token_lifetime: i64,
    /// Skiptoken lifetime in seconds of the simulated clock.
    #[arg(long, default_value_t = 300)]
    pub skiptoken_ttl: i64,
    /// Delay before a sign-in recorded through the control API shows in
    /// signInActivity (Graph: up to 24 h), in seconds of the simulated clock.
    #[arg(long, default_value_t = 0)]
    pub sign_in_lag: i64,
    /// Switch Graph throttling off.
    #[arg(long)]
    pub no_throttle: bool,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Latency per returned item (users in a page, batch items), in microseconds.
    #[arg(long, default_value_t = 0)]
    pub per_item_latency_us: u64,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_503_rate: f64,
    /// Share of requests whose connection is reset.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Share of responses cut short.
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Also add a member with exactly this UPN (on the tenant's domain;
    /// repeatable), e.g. to hold UPNs starting with `'`, `#` or `~`.
    #[arg(long = "add-upn", value_name = "UPN")]
    pub add_upns: Vec<String>,
    /// Also add this many unmanaged (viral) guests (workforce), spread over
    /// `--viral-domains` home domains of their own.
    #[arg(long, default_value_t = 0)]
    pub viral_guests: u32,
    /// Home domains of the `--viral-guests`.
    #[arg(long, default_value_t = 300)]
    pub viral_domains: u32,
}

/// In-process configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub users: u32,
    pub kind: TenantKind,
    pub port: u16,
    pub seed: u64,
    pub dir: Option<PathBuf>,
    pub start: Option<DateTime<Utc>>,
    pub token_lifetime_secs: i64,
    pub skiptoken_ttl_secs: i64,
    pub throttle: ThrottleConfig,
    pub faults: Faults,
    /// Delay before recorded sign-ins show in signInActivity (Graph: up to 24 h).
    pub sign_in_lag_secs: i64,
    /// Write the ground-truth file at start (slow-ish for a million users).
    pub write_truth: bool,
    /// `directorySizeQuota.total`; default 300,000 (workforce) or 1,250,000 (B2C).
    pub quota_total: Option<u64>,
    /// Members added with exactly these UPNs (local parts; the tenant's
    /// domain is appended when a UPN has no `@`).
    pub extra_upns: Vec<String>,
    /// Unmanaged guests added over `viral_domains` domains of their own
    /// ([`Tenant::add_viral_guests`]).
    pub viral_guests: u32,
    pub viral_domains: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            users: 1000,
            kind: TenantKind::Workforce,
            port: 0,
            seed: 42,
            dir: None,
            start: None,
            token_lifetime_secs: 3599,
            skiptoken_ttl_secs: 300,
            throttle: ThrottleConfig::default(),
            faults: Faults::default(),
            sign_in_lag_secs: 0,
            write_truth: true,
            quota_total: None,
            extra_upns: Vec::new(),
            viral_guests: 0,
            viral_domains: 1,
        }
    }
}

impl From<SimArgs> for SimConfig {
    fn from(a: SimArgs) -> Self {
        SimConfig {
            users: a.users,
            kind: a.kind,
            port: a.port,
            seed: a.seed.unwrap_or_else(rand::random),
            dir: a.dir,
            start: a.start,
            token_lifetime_secs: a.token_lifetime,
            skiptoken_ttl_secs: a.skiptoken_ttl,
            throttle: ThrottleConfig {
                enabled: !a.no_throttle,
                ..ThrottleConfig::default()
            },
            faults: Faults {
                latency_ms: a.latency_ms,
                per_item_latency_us: a.per_item_latency_us,
                rate_503: a.fault_503_rate,
                rate_reset: a.reset_rate,
                rate_truncate: a.truncate_rate,
                ..Faults::default()
            },
            sign_in_lag_secs: a.sign_in_lag,
            write_truth: true,
            quota_total: None,
            extra_upns: a.add_upns,
            viral_guests: a.viral_guests,
            viral_domains: a.viral_domains,
        }
    }
}

/// A running simulator.
pub struct Sim {
    state: Arc<server::State>,
    task: Option<tokio::task::JoinHandle<()>>,
    ca_pem: String,
    ca_file: PathBuf,
    truth_file: PathBuf,
    kind: TenantKind,
    mail_from: Option<String>,
    /// A temp dir we created (removed on drop); `None` when the caller chose `--dir`.
    owned_dir: Option<PathBuf>,
}

impl Sim {
    /// Generate the tenant, mint the CA, bind 127.0.0.1 and start serving.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Sim> {
        let owned_dir = cfg.dir.is_none().then(|| {
            std::env::temp_dir().join(format!(
                "dormant-sim-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ))
        });
        let dir = cfg
            .dir
            .clone()
            .or_else(|| owned_dir.clone())
            .unwrap_or_default();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = tls::generate()?;
        let ca_file = dir.join("sim-ca.pem");
        std::fs::write(&ca_file, &tls.ca_pem)
            .with_context(|| format!("writing {}", ca_file.display()))?;

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .await
            .context("binding 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let base_url = format!("https://127.0.0.1:{port}");

        let start = cfg.start.unwrap_or_else(Utc::now);
        let clock = SimClock::starting_at(start);
        let users = cfg.users;
        let (kind, seed) = (cfg.kind, cfg.seed);
        let extra = cfg.extra_upns.clone();
        let (viral, viral_domains) = (cfg.viral_guests, cfg.viral_domains);
        if viral > 0 && kind != TenantKind::Workforce {
            anyhow::bail!("--viral-guests: unmanaged guests are a workforce tenant's");
        }
        let tenant = tokio::task::spawn_blocking(move || {
            let mut t = Tenant::generate(kind, users, seed, start);
            if viral > 0 {
                t.add_viral_guests(viral, viral_domains);
            }
            let upns: Vec<String> = extra
                .iter()
                .map(|u| match u.contains('@') {
                    true => u.clone(),
                    false => format!("{u}@{}", t.domain),
                })
                .collect();
            t.add_users_with_upns(&upns).map(|()| t)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("--add-upn: {e}"))?;
        let truth_file = dir.join("sim-truth.jsonl");
        if cfg.write_truth {
            write_truth(&tenant, &truth_file)?;
        }
        let mail_from =
            (kind == TenantKind::Workforce && tenant.users.len() > 3).then(|| tenant.upn(3));
        let client_id = ids::named_guid(seed, "dormant-app");
        let now = clock.now_secs();
        let quota_total = cfg.quota_total.unwrap_or(match kind {
            TenantKind::Workforce => 300_000,
            TenantKind::B2c => 1_250_000,
        });
        let tenant_id = tenant.tenant_id.clone();
        let state = Arc::new(server::State {
            base_url,
            tenant_id,
            client_id: client_id.clone(),
            clock,
            tenant: RwLock::new(tenant),
            auth: Mutex::new(auth::AuthState::new(
                client_id,
                cfg.token_lifetime_secs,
                now,
            )),
            faults: Mutex::new(cfg.faults.clone()),
            throttle: Mutex::new(throttle::Throttle::new(cfg.throttle.clone())),
            stats: Default::default(),
            mail: Mutex::new(Vec::new()),
            concealed: AtomicBool::new(true),
            downloads: Mutex::new(Default::default()),
            skiptoken_ttl_secs: cfg.skiptoken_ttl_secs,
            skip_key: rand::random(),
            quota_total,
            shutdown: CancellationToken::new(),
            fault_rng: Mutex::new(ids::Rng::new(seed ^ 0xfa17)),
            pending_sign_ins: Mutex::new(Vec::new()),
            no_pim: std::sync::atomic::AtomicBool::new(false),
            exhausted_skus: Mutex::new(Default::default()),
            sign_in_lag_secs: cfg.sign_in_lag_secs,
            idp_key: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn(server::serve(state.clone(), listener, tls.server));
        Ok(Sim {
            state,
            task: Some(task),
            ca_pem: tls.ca_pem,
            ca_file,
            truth_file,
            kind,
            mail_from,
            owned_dir,
        })
    }

    /// The settings that point dormant at this simulator, in CONTRACT order.
    pub fn settings(&self) -> Vec<(String, String)> {
        let b = self.base_url();
        let tid = self.state.tenant_id.clone();
        let auth = self.state.lock(&self.state.auth);
        let mut v: Vec<(String, String)> = vec![
            ("DORMANT_GRAPH_URL".into(), b.clone()),
            ("DORMANT_AUTHORITY_HOST".into(), b.clone()),
            ("DORMANT_TENANT_ID".into(), tid.clone()),
            ("DORMANT_TENANT_KIND".into(), self.kind.as_str().into()),
            ("DORMANT_CREDENTIAL".into(), "client-secret".into()),
            ("DORMANT_CLIENT_ID".into(), auth.client_id.clone()),
            ("DORMANT_CLIENT_SECRET".into(), auth.secret.clone()),
            ("DORMANT_CA_FILE".into(), self.ca_file.display().to_string()),
            ("DORMANT_KEYVAULT_URL".into(), b.clone()),
            // Exchange Online's admin API (mailbox conversions) is served here too.
            ("DORMANT_EXCHANGE_URL".into(), b.clone()),
            (
                "DORMANT_CLIENT_SECRET_NAME".into(),
                auth.secret_name.clone(),
            ),
            (
                "DORMANT_SIM_TRUTH".into(),
                self.truth_file.display().to_string(),
            ),
            ("DORMANT_SIM_CONTROL".into(), format!("{b}/_sim")),
            ("IDENTITY_ENDPOINT".into(), format!("{b}/msi/token")),
            ("IDENTITY_HEADER".into(), auth.identity_header.clone()),
            ("DORMANT_GDPR_ISSUER".into(), format!("{b}/{tid}/v2.0")),
            ("DORMANT_GDPR_AUDIENCE".into(), auth.client_id.clone()),
        ];
        if self.kind == TenantKind::B2c {
            // The user flow the simulator's ID tokens name in `tfp`; a B2C
            // issuer needs the list (config requires it).
            v.push(("DORMANT_GDPR_POLICIES".into(), auth::B2C_USER_FLOW.into()));
        }
        // Last: readers stop at it (benches/scan.rs).
        v.push((
            "DORMANT_GDPR_METADATA_URL".into(),
            format!("{b}/{tid}/v2.0/.well-known/openid-configuration"),
        ));
        if let Some(m) = &self.mail_from {
            v.push(("DORMANT_POLICY__NOTIFY__MAIL_FROM".into(), m.clone()));
        }
        v
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }
    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
    pub fn truth_file(&self) -> &Path {
        &self.truth_file
    }
    pub fn tenant_id(&self) -> String {
        self.state.tenant_id.clone()
    }
    pub fn client_id(&self) -> String {
        self.state.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.state.lock(&self.state.auth).secret.clone()
    }
    /// Stores another secret in the simulated Key Vault (a new version).
    pub fn set_vault_secret(&self, name: &str, value: &str) {
        let now = self.state.clock.now_secs();
        self.state.lock(&self.state.auth).other_secrets.insert(
            name.to_ascii_lowercase(),
            (
                uuid::Uuid::new_v4().simple().to_string(),
                value.to_owned(),
                now,
            ),
        );
    }
    /// The simulated clock.
    pub fn clock(&self) -> SimClock {
        self.state.clock.clone()
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.state.clock.now()
    }
    pub fn advance(&self, by: Duration) {
        self.state.clock.advance(by)
    }
    pub fn set_faults(&self, f: Faults) {
        *self.state.lock(&self.state.faults) = f;
    }
    /// Replace the throttling budgets and forget past spending.
    pub fn set_throttle(&self, c: ThrottleConfig) {
        let mut t = self.state.lock(&self.state.throttle);
        t.config = c;
        t.reset();
    }
    pub fn set_token_lifetime(&self, secs: i64) {
        self.state.lock(&self.state.auth).token_lifetime_secs = secs;
    }
    /// A new client secret (also a new Key Vault version); the old one is refused.
    pub fn rotate_secret(&self) -> String {
        let now = self.state.now();
        self.state.lock(&self.state.auth).rotate(now)
    }
    pub fn mail(&self) -> Vec<CapturedMail> {
        self.state.lock(&self.state.mail).clone()
    }
    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot()
    }
    /// Zero the counters.
    pub fn reset_stats(&self) {
        self.state.stats.reset()
    }
    /// `admin/reportSettings.displayConcealedNames` right now.
    pub fn concealed_names(&self) -> bool {
        self.state
            .concealed
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Record a sign-in now (interactive or not, successful or failed).
    pub fn record_sign_in(&self, user: &str, interactive: bool, success: bool) -> bool {
        control::record_sign_in(&self.state, user, interactive, success).is_some()
    }
    /// A person (not the app) re-enables the account, visible in the audit log.
    pub fn reenable_by_person(&self, user: &str) -> bool {
        control::reenable_by_person(&self.state, user).is_some()
    }
    /// Someone enables or disables the account: `by` = "person", or the app
    /// id of another app (HR provisioning). Audited as Graph would.
    pub fn set_enabled(&self, user: &str, enabled: bool, by: &str) -> bool {
        control::set_enabled(&self.state, user, enabled, by).is_some()
    }
    /// Graph sends an odd record for the user from now on (`None`: normal).
    pub fn set_quirk(&self, user: &str, quirk: Option<Quirk>) -> bool {
        control::set_quirk(&self.state, user, quirk)
    }
    /// A person invited the guest now (an `Invite external user` audit).
    pub fn record_invitation(&self, guest: &str, inviter: &str) -> bool {
        control::record_invitation(&self.state, guest, inviter)
    }
    /// Sets (or removes) a guest's sponsor.
    pub fn set_sponsor(&self, guest: &str, sponsor: Option<&str>) -> bool {
        control::set_sponsor(&self.state, guest, sponsor)
    }
    /// The user becomes a PIM-eligible Global Administrator.
    pub fn make_eligible(&self, user: &str) -> bool {
        control::make_eligible(&self.state, user)
    }
    /// Whether `sku_id` has free seats; without, assigning it is refused
    /// (`400`, as Graph answers an assignment past the subscription's units).
    pub fn set_sku_seats_free(&self, sku_id: &str, free: bool) {
        let mut skus = self.state.lock(&self.state.exhausted_skus);
        if free {
            skus.remove(&sku_id.to_ascii_lowercase());
        } else {
            skus.insert(sku_id.to_ascii_lowercase());
        }
    }
    /// Whether the tenant has Entra ID P2 (PIM); without it the eligibility
    /// listing answers `400 AadPremiumLicenseRequired`.
    pub fn set_pim_licensed(&self, licensed: bool) {
        self.state
            .no_pim
            .store(!licensed, std::sync::atomic::Ordering::SeqCst);
    }
    /// A user ID token (RS256, verifiable against the JWKS in the OpenID
    /// metadata) for `user` (id or UPN), as after an interactive sign-in
    /// `auth_age` ago; `audience` defaults to the app's client id. Records the sign-in.
    pub fn issue_user_token(
        &self,
        user: &str,
        audience: Option<&str>,
        auth_age: Duration,
    ) -> Option<String> {
        auth::issue_user_token(&self.state, user, audience, auth_age.as_secs() as i64, 3600)
    }

    /// Run `f` over the tenant (read-only), for tests that need exact ids.
    pub fn with_tenant<R>(&self, f: impl FnOnce(&Tenant) -> R) -> R {
        f(&self.state.tenant_read())
    }
    /// Stop serving and wait for the listener to close.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        if let Some(d) = self.owned_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn write_truth(t: &Tenant, path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    t.write_truth(&mut w)?;
    w.flush()?;
    Ok(())
}

/// `dormant sim`: start, print the settings one per line, serve until killed
/// (Ctrl-C or SIGTERM; the temp dir with the CA and truth file is then removed).
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    run_until(args, &mut out, stop_signal()).await
}

/// [`run`] with the output and the stop condition supplied (for tests).
pub async fn run_until(
    args: SimArgs,
    out: &mut impl Write,
    until: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if !(1..=5_000_000).contains(&args.users) {
        anyhow::bail!("--users must be between 1 and 5,000,000");
    }
    let sim = Sim::start(args.into()).await?;
    for (k, v) in sim.settings() {
        writeln!(out, "{k}={v}")?;
    }
    out.flush()?;
    until.await;
    sim.shutdown().await;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
