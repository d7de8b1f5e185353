//! Microsoft 365 usage report (`getOffice365ActiveUserDetail`) and the
//! report-settings guard that un-conceals user names for the download and
//! always conceals them again.

use super::client::{GraphClient, GraphRequest};
use super::error::GraphError;
use super::models::{ActiveUserDetail, ReportSettings};
use super::pacer::RequestClass;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// The reporting window of a usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportPeriod {
    D7,
    D30,
    D90,
    D180,
}

impl ReportPeriod {
    fn as_str(self) -> &'static str {
        match self {
            ReportPeriod::D7 => "D7",
            ReportPeriod::D30 => "D30",
            ReportPeriod::D90 => "D90",
            ReportPeriod::D180 => "D180",
        }
    }
}

/// Most redirects followed after Graph's 302.
const MAX_REDIRECTS: usize = 3;

/// Rows buffered between the CSV parser thread and the async consumer.
const ROW_CHANNEL: usize = 256;

impl GraphClient {
    /// Streams `getOffice365ActiveUserDetail(period=…)` as typed rows.
    ///
    /// Graph answers 302 to a short-lived pre-authenticated CSV URL: it is
    /// fetched **without** our `Authorization` header (redirects are followed
    /// by hand; the HTTP client never follows them). The CSV (UTF-8 BOM) is
    /// parsed while it downloads, so a million-row report never sits in memory.
    /// A failure mid-download ends the stream with a transient error: the
    /// caller restarts the download (reports: 14 calls per 10 min).
    pub async fn office365_active_user_detail(
        &self,
        period: ReportPeriod,
    ) -> Result<impl Stream<Item = Result<ActiveUserDetail, GraphError>> + Send + 'static, GraphError>
    {
        let segment = format!("getOffice365ActiveUserDetail(period='{}')", period.as_str());
        let mut url = self.url(&["reports"]);
        // The function-call segment is sent as Graph documents it (the quotes unencoded).
        url.set_path(&format!("{}/{segment}", url.path().trim_end_matches('/')));
        let mut req = GraphRequest::new(
            Method::GET,
            url,
            RequestClass::Report,
            "/reports/getOffice365ActiveUserDetail(period)",
        );
        req.accept_redirect = true;
        req.expect_json = false;
        let mut resp = self.send(req).await?;
        let mut redirects = 0;
        let base = self.url(&["reports"]);
        let mut current = resp_location(&resp, Some(&base))?;
        let response = loop {
            match current.take() {
                None => {
                    // Graph answered 200 with the CSV itself: already read.
                    let body = std::mem::take(&mut resp.body);
                    return Ok(spawn_csv_parser(
                        futures::stream::once(async move { Ok::<_, std::io::Error>(body) }).boxed(),
                    ));
                }
                Some(location) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(GraphError::permanent(
                            0,
                            "TooManyRedirects",
                            "the usage report redirected too often",
                        ));
                    }
                    // No bearer token here: the URL carries its own authorization.
                    let r = self
                        .http()
                        .get(location.clone())
                        .send()
                        .await
                        .map_err(|e| super::client::transport_error(&e))?;
                    self.pacer().count_request();
                    let status = r.status().as_u16();
                    if (300..400).contains(&status) {
                        let next = r
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| location.join(v).ok());
                        current = next;
                        if current.is_none() {
                            return Err(GraphError::Transient(
                                "report redirect without Location".into(),
                            ));
                        }
                        continue;
                    }
                    if !(200..300).contains(&status) {
                        let retry_after = None;
                        let body = r.bytes().await.unwrap_or_default();
                        return Err(match super::error::classify(status, retry_after, &body) {
                            super::error::Verdict::Fail(e) => e,
                            _ => GraphError::Transient(format!("report download HTTP {status}")),
                        });
                    }
                    break r;
                }
            }
        };
        let bytes = response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed();
        Ok(spawn_csv_parser(bytes))
    }

    /// `GET /admin/reportSettings`.
    pub async fn report_settings(&self) -> Result<ReportSettings, GraphError> {
        // A settings read, not a report: it does not spend the 14-per-10-min report budget.
        self.get_json(
            self.url(&["admin", "reportSettings"]),
            RequestClass::ReadOne,
            "/admin/reportSettings",
        )
        .await
    }

    /// `PATCH /admin/reportSettings {"displayConcealedNames": …}`.
    pub async fn set_display_concealed_names(&self, conceal: bool) -> Result<(), GraphError> {
        self.write(
            Method::PATCH,
            self.url(&["admin", "reportSettings"]),
            Some(&serde_json::json!({ "displayConcealedNames": conceal })),
            RequestClass::Write,
            "/admin/reportSettings",
        )
        .await
        .map(|_| ())
    }

    /// Un-conceals user names in usage reports if they are concealed, and
    /// returns the guard that puts the setting back. Await
    /// [`ConcealedNamesGuard::restore`] on every path, or use
    /// [`with_revealed_names`](Self::with_revealed_names).
    pub async fn reveal_report_names(&self) -> Result<ConcealedNamesGuard, GraphError> {
        let settings = self.report_settings().await?;
        // The guard exists before the PATCH: an answer lost after the change
        // landed (a timeout, a reset, a 5xx from a gateway) must still end
        // with the names concealed again.
        let guard = ConcealedNamesGuard {
            client: self.clone(),
            must_restore: settings.display_concealed_names,
            restored: AtomicBool::new(false),
        };
        if settings.display_concealed_names {
            if let Err(e) = self.set_display_concealed_names(false).await {
                // Conceal again whether or not the change landed (setting
                // `true` twice is harmless); Drop retries if this fails too.
                let _ = guard.restore().await;
                return Err(e);
            }
            tracing::info!("usage report names un-concealed for the download");
        }
        Ok(guard)
    }

    /// Runs `work` with report names revealed and restores the setting
    /// afterwards, whether `work` succeeds, fails or panics (the panic is
    /// resumed after the restore).
    pub async fn with_revealed_names<T, F, Fut>(&self, work: F) -> Result<T, GraphError>
    where
        F: FnOnce(GraphClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, GraphError>>,
    {
        use futures::FutureExt;
        let guard = self.reveal_report_names().await?;
        let outcome = std::panic::AssertUnwindSafe(work(self.clone()))
            .catch_unwind()
            .await;
        let restored = guard.restore().await;
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(Err(e)) => Err(e),
            Ok(Ok(v)) => restored.map(|()| v),
        }
    }
}

fn resp_location(
    resp: &super::client::GraphResponse,
    base: Option<&url::Url>,
) -> Result<Option<url::Url>, GraphError> {
    if !(300..400).contains(&resp.status) {
        return Ok(None);
    }
    let loc = resp
        .headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| GraphError::Transient("report redirect without Location".into()))?;
    let parsed = match base {
        Some(b) => b.join(loc),
        None => url::Url::parse(loc),
    };
    parsed
        .map(Some)
        .map_err(|e| GraphError::Transient(format!("report redirect to an invalid URL: {e}")))
}

/// Restores `displayConcealedNames` after a usage-report download.
///
/// Call [`restore`](Self::restore) on every path. Dropping it unrestored logs
/// an error and, inside a Tokio runtime, makes a best-effort restore in the
/// background (it cannot be awaited from `Drop`).
#[must_use = "await restore() on every path, or user names stay visible in usage reports"]
pub struct ConcealedNamesGuard {
    client: GraphClient,
    must_restore: bool,
    restored: AtomicBool,
}

impl std::fmt::Debug for ConcealedNamesGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcealedNamesGuard")
            .field("must_restore", &self.must_restore)
            .finish_non_exhaustive()
    }
}

impl ConcealedNamesGuard {
    /// Whether names were concealed before (and will be concealed again).
    pub fn was_concealed(&self) -> bool {
        self.must_restore
    }

    /// Conceals the names again if they were concealed before.
    pub async fn restore(self) -> Result<(), GraphError> {
        if !self.must_restore {
            self.restored.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let r = self.client.set_display_concealed_names(true).await;
        match &r {
            Ok(()) => {
                self.restored.store(true, Ordering::SeqCst);
                tracing::info!("usage report names concealed again");
            }
            Err(e) => {
                // Leave `restored` false: Drop will shout and try once more.
                tracing::error!(error = %e, "could not conceal usage report names again");
            }
        }
        r
    }
}

impl Drop for ConcealedNamesGuard {
    fn drop(&mut self) {
        if !self.must_restore || self.restored.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            "report settings guard dropped without restore(): user names in usage reports are NOT concealed; set admin/reportSettings displayConcealedNames back to true"
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            handle.spawn(async move {
                match client.set_display_concealed_names(true).await {
                    Ok(()) => tracing::warn!("usage report names concealed again by the guard's fallback"),
                    Err(e) => tracing::error!(error = %e, "fallback restore of displayConcealedNames failed"),
                }
            });
        }
    }
}

/// Parses the CSV on a blocking thread as bytes arrive; rows come out of a channel.
fn spawn_csv_parser(
    bytes: BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
) -> impl Stream<Item = Result<ActiveUserDetail, GraphError>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ActiveUserDetail, GraphError>>(ROW_CHANNEL);
    let reader = tokio_util::io::StreamReader::new(bytes);
    tokio::task::spawn_blocking(move || {
        let sync = tokio_util::io::SyncIoBridge::new(reader);
        parse_csv(sync, |row| tx.blocking_send(row).is_ok());
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// Parses a usage-report CSV, handing each row to `emit` until it returns false.
/// Columns are found by header name, so added or reordered columns do not break it.
pub fn parse_csv<R: Read>(
    reader: R,
    mut emit: impl FnMut(Result<ActiveUserDetail, GraphError>) -> bool,
) {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            emit(Err(csv_error(&e)));
            return;
        }
    };
    let index: HashMap<String, usize> = headers
        .iter()
        .enumerate()
        // csv strips the BOM; trim anyway in case a proxy re-encoded it.
        .map(|(i, h)| {
            (
                h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase(),
                i,
            )
        })
        .collect();
    if !index.contains_key("user principal name") {
        emit(Err(GraphError::Transient(
            "the usage report has no 'User Principal Name' column".into(),
        )));
        return;
    }
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                if !emit(Ok(row(&index, &record))) {
                    return;
                }
            }
            Err(e) => {
                emit(Err(csv_error(&e)));
                return;
            }
        }
    }
}

fn csv_error(e: &csv::Error) -> GraphError {
    // A cut download shows up as an I/O error or a broken last record.
    GraphError::Transient(format!("usage report CSV: {e}"))
}

fn row(index: &HashMap<String, usize>, r: &csv::StringRecord) -> ActiveUserDetail {
    let text = |name: &str| -> Option<&str> {
        index
            .get(name)
            .and_then(|&i| r.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let date = |name: &str| text(name).and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
    let flag = |name: &str| text(name).is_some_and(|s| s.eq_ignore_ascii_case("true"));
    ActiveUserDetail {
        report_refresh_date: date("report refresh date"),
        user_principal_name: text("user principal name").unwrap_or_default().to_string(),
        display_name: text("display name").map(String::from),
        is_deleted: flag("is deleted"),
        deleted_date: date("deleted date"),
        has_exchange_license: flag("has exchange license"),
        has_onedrive_license: flag("has onedrive license"),
        has_sharepoint_license: flag("has sharepoint license"),
        has_skype_license: flag("has skype for business license"),
        has_yammer_license: flag("has yammer license"),
        has_teams_license: flag("has teams license"),
        exchange_last_activity: date("exchange last activity date"),
        onedrive_last_activity: date("onedrive last activity date"),
        sharepoint_last_activity: date("sharepoint last activity date"),
        skype_last_activity: date("skype for business last activity date"),
        yammer_last_activity: date("yammer last activity date"),
        teams_last_activity: date("teams last activity date"),
        exchange_license_assign_date: date("exchange license assign date"),
        onedrive_license_assign_date: date("onedrive license assign date"),
        sharepoint_license_assign_date: date("sharepoint license assign date"),
        skype_license_assign_date: date("skype for business license assign date"),
        yammer_license_assign_date: date("yammer license assign date"),
        teams_license_assign_date: date("teams license assign date"),
        assigned_products: text("assigned products")
            .map(|s| {
                s.split('+')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &[u8] = include_bytes!("fixtures/office365-active-user-detail.csv");

    fn parse_all(bytes: &[u8]) -> Vec<Result<ActiveUserDetail, GraphError>> {
        let mut rows = Vec::new();
        parse_csv(bytes, |r| {
            rows.push(r);
            true
        });
        rows
    }

    #[test]
    fn fixture_starts_with_a_bom_and_parses() {
        assert!(CSV.starts_with(b"\xEF\xBB\xBF"));
        let rows: Vec<ActiveUserDetail> = parse_all(CSV)
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("all rows parse");
        assert_eq!(rows.len(), 3);
        let a = &rows[0];
        assert_eq!(a.report_refresh_date, NaiveDate::from_ymd_opt(2024, 5, 28));
        assert_eq!(a.user_principal_name, "AdeleV@contoso.com");
        assert!(a.has_exchange_license && a.has_teams_license && !a.has_yammer_license);
        assert_eq!(
            a.exchange_last_activity,
            NaiveDate::from_ymd_opt(2024, 5, 27)
        );
        assert_eq!(a.yammer_last_activity, None, "empty = never");
        assert_eq!(
            a.assigned_products,
            vec![
                "MICROSOFT 365 E5".to_string(),
                "MICROSOFT POWER AUTOMATE FREE".to_string()
            ]
        );
        // Concealed names: a hex hash instead of the UPN.
        assert_eq!(rows[2].user_principal_name.len(), 32);
        assert!(rows[2].last_activity().is_none());
        assert!(rows[1].is_deleted);
        assert_eq!(rows[1].deleted_date, NaiveDate::from_ymd_opt(2024, 4, 2));
    }

    #[test]
    fn truncated_or_garbage_csv_reports_an_error_without_panicking() {
        let cut = &CSV[..CSV.len() - 40];
        let rows = parse_all(cut);
        assert!(!rows.is_empty());
        let garbage = parse_all(b"\x00\xff<html>proxy error</html>");
        assert!(matches!(
            garbage.last(),
            Some(Err(GraphError::Transient(_)))
        ));
        assert!(matches!(parse_all(b"").last(), Some(Err(_))));
    }

    #[test]
    fn stops_when_the_consumer_stops() {
        let mut n = 0;
        parse_csv(CSV, |_| {
            n += 1;
            false
        });
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn streaming_parser_yields_rows_from_chunks() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = CSV
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let rows: Vec<ActiveUserDetail> = spawn_csv_parser(futures::stream::iter(chunks).boxed())
            .try_collect()
            .await
            .expect("parses");
        assert_eq!(rows.len(), 3);
        // A download that fails mid-way ends with a transient error.
        let broken = futures::stream::iter(vec![
            Ok(bytes::Bytes::copy_from_slice(&CSV[..300])),
            Err(std::io::Error::other("connection reset")),
        ]);
        let out: Vec<_> = spawn_csv_parser(broken.boxed()).collect().await;
        assert!(matches!(out.last(), Some(Err(GraphError::Transient(_)))));
    }
}
