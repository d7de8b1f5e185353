//! The functions this handler serves, one file per function once they
//! exist. Each is thin: it turns a trigger into a call on the domain.
//!
//! `catalog()` is the single list the router serves; a test checks it
//! against the `functions/*/function.json` folders the host reads.

pub mod user_actions;

use std::sync::Arc;

use anyhow::Context as _;
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

use crate::config::Config;
use crate::host::{FailureRecorder, Functions, PermanentFailure};
use crate::store::audit::{AuditLog, AuditRecord, Outcome};
use crate::store::{StorageConfig, Store};

/// The Functions host's setting for a user-assigned identity on an
/// identity-based storage connection.
const STORAGE_CLIENT_ID_SETTING: &str = "AzureWebJobsStorage__clientId";

/// What every function needs, built once per process. Building does no
/// network I/O, so `dormant serve` answers the host's readiness probe at once.
pub struct AppContext {
    pub config: Config,
    pub store: Store,
    pub audit: AuditLog,
    storage_ready: tokio::sync::OnceCell<()>,
}

impl AppContext {
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let credential: Option<Arc<dyn TokenCredential>> = match &config.storage {
            StorageConfig::ManagedIdentity { .. } => {
                let user_assigned_id = std::env::var(STORAGE_CLIENT_ID_SETTING)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(UserAssignedId::ClientId);
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id,
                        ..Default::default()
                    }))
                    .context("creating the managed identity credential for storage")?;
                Some(credential)
            }
            _ => None,
        };
        let store = Store::connect(&config.storage, credential).context("connecting storage")?;
        let audit = AuditLog::new(store.clone());
        Ok(Self {
            config,
            store,
            audit,
            storage_ready: tokio::sync::OnceCell::new(),
        })
    }

    /// Creates dormant's containers and queues once per process, on first
    /// use rather than at start (start must not wait on the network). A
    /// failure is retried by the next caller.
    pub async fn storage(&self) -> Result<&Store, crate::store::StoreError> {
        self.storage_ready
            .get_or_try_init(|| self.store.ensure_defaults())
            .await?;
        Ok(&self.store)
    }

    /// Records a permanent failure in the audit log before the host is told
    /// the invocation is done.
    pub fn failure_recorder(&self) -> FailureRecorder {
        let audit = self.audit.clone();
        Arc::new(move |failure: PermanentFailure| {
            let audit = audit.clone();
            Box::pin(async move {
                audit
                    .record(&failure_record(&failure))
                    .await
                    .context("writing the audit record of a permanent failure")
            })
        })
    }
}

/// The audit line of a refused invocation: codes and opaque ids only.
pub fn failure_record(failure: &PermanentFailure) -> AuditRecord {
    let mut record = AuditRecord::new(failure.code.clone(), Outcome::Failed);
    record.error = Some(failure.message.clone());
    record.detail = Some(match (&failure.message_id, failure.dequeue_count) {
        (Some(id), Some(n)) => format!("{} message {id} delivery {n}", failure.function),
        _ => failure.function.to_owned(),
    });
    record
}

/// Every function dormant serves, registered on the router.
pub fn catalog(ctx: Arc<AppContext>) -> Functions {
    let recorder = ctx.failure_recorder();
    let actions = ctx.clone();
    Functions::new()
        .queue(user_actions::NAME, user_actions::BINDING, move |inv| {
            user_actions::run(actions.clone(), inv)
        })
        .on_permanent_failure(recorder)
}
