//! Exchange Online's REST admin API (`POST {root}/adminapi/beta/{tenant}/InvokeCommand`),
//! the app-only way to run `Get-Mailbox` / `Set-Mailbox -Type Shared`.
//!
//! Graph cannot convert a mailbox; the conversion has to happen before the
//! licenses go (a user mailbox without a license is disconnected after 30
//! days and the conversion then fails and loses mail).

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    EntraTokenProvider, GraphClient, GraphError, GraphSettings, Pacer, PacerConfig, RequestClass,
};

/// The token audience of the admin API.
pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";

/// `RecipientTypeDetails` of a mailbox, as far as dormant cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxKind {
    User,
    Shared,
    /// Room, equipment, linked, …: never converted by dormant.
    Other,
}

#[derive(Clone, Debug)]
pub struct ExchangeAdmin {
    client: GraphClient,
    endpoint: url::Url,
}

#[derive(Deserialize)]
struct CmdletAnswer {
    #[serde(default)]
    value: Vec<serde_json::Value>,
}

impl ExchangeAdmin {
    /// `root` is `DORMANT_EXCHANGE_URL`; the credential is Graph's, asked
    /// for the Exchange audience.
    pub fn new(
        settings: &GraphSettings,
        root: &url::Url,
        http: reqwest::Client,
    ) -> Result<Self, GraphError> {
        let tokens = EntraTokenProvider::new(settings.clone(), http.clone(), None)?
            .with_scope(EXCHANGE_SCOPE);
        // Exchange throttles on its own budget, not Graph's.
        let pacer = Arc::new(Pacer::new(PacerConfig::from_settings(settings)));
        let client = GraphClient::with_parts(settings, http, Arc::new(tokens), pacer);
        let mut endpoint = root.clone();
        let base = endpoint.path().trim_end_matches('/').to_owned();
        endpoint.set_path(&format!(
            "{base}/adminapi/beta/{}/InvokeCommand",
            settings.tenant_id
        ));
        Ok(Self { client, endpoint })
    }

    async fn invoke(
        &self,
        cmdlet: &str,
        parameters: serde_json::Value,
    ) -> Result<CmdletAnswer, GraphError> {
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}});
        self.client
            .write(
                Method::POST,
                self.endpoint.clone(),
                Some(&body),
                RequestClass::Write,
                "/adminapi/beta/{tenant}/InvokeCommand",
            )
            .await?
            .json()
    }

    /// The mailbox kind of a user (by object id); `None` when the user has
    /// no mailbox.
    pub async fn mailbox_kind(&self, user_id: &str) -> Result<Option<MailboxKind>, GraphError> {
        match self
            .invoke("Get-Mailbox", json!({"Identity": user_id}))
            .await
        {
            Ok(answer) => Ok(answer.value.first().map(|m| {
                match m["RecipientTypeDetails"].as_str().unwrap_or("") {
                    "UserMailbox" => MailboxKind::User,
                    "SharedMailbox" => MailboxKind::Shared,
                    _ => MailboxKind::Other,
                }
            })),
            Err(GraphError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Set-Mailbox -Type Shared` (or `Regular`, to undo).
    pub async fn set_mailbox_type(&self, user_id: &str, shared: bool) -> Result<(), GraphError> {
        let ty = if shared { "Shared" } else { "Regular" };
        self.invoke("Set-Mailbox", json!({"Identity": user_id, "Type": ty}))
            .await
            .map(|_| ())
    }
}
