//! `inactive-users.csv`: UTF-8, header row, RFC 4180 quoting (the `csv`
//! crate), one row per scanned user that is not plainly active, written in
//! chunks so a million-user report never sits in memory.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::policy::{Action, RiskFlag, Source, Verdict};

/// The CONTRACT columns, in order.
pub const COLUMNS: [&str; 26] = [
    "userId",
    "userPrincipalName",
    "displayName",
    "userType",
    "accountEnabled",
    "createdDateTime",
    "lastSuccessfulSignIn",
    "lastInteractiveSignIn",
    "lastNonInteractiveSignIn",
    "exchangeLastActivity",
    "oneDriveLastActivity",
    "sharePointLastActivity",
    "teamsLastActivity",
    "lastActivity",
    "lastActivitySource",
    "daysInactive",
    "licenses",
    "department",
    "jobTitle",
    "managerName",
    "managerEmail",
    "riskFlags",
    "verdict",
    "recommendedAction",
    "phase",
    "nextStepDate",
];

/// One report row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportRow {
    pub user_id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub user_type: String,
    pub account_enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub last_successful_sign_in: Option<DateTime<Utc>>,
    pub last_interactive_sign_in: Option<DateTime<Utc>>,
    pub last_non_interactive_sign_in: Option<DateTime<Utc>>,
    pub exchange_last_activity: Option<NaiveDate>,
    pub onedrive_last_activity: Option<NaiveDate>,
    pub sharepoint_last_activity: Option<NaiveDate>,
    pub teams_last_activity: Option<NaiveDate>,
    pub last_activity: Option<DateTime<Utc>>,
    pub last_activity_source: Option<Source>,
    pub days_inactive: Option<i64>,
    /// skuPartNumbers.
    pub licenses: Vec<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub manager_name: Option<String>,
    pub manager_email: Option<String>,
    pub risk_flags: BTreeSet<RiskFlag>,
    pub verdict: Option<Verdict>,
    pub recommended_action: Option<Action>,
    pub phase: Option<String>,
    pub next_step_date: Option<DateTime<Utc>>,
}

fn iso(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn day(d: Option<NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Free text typed by people (B2C users choose their own display name)
/// must not become a formula when an admin opens the file in a spreadsheet:
/// a leading `= + - @` or control character gets a `'` in front (OWASP CSV
/// injection guidance).
pub fn neutralise(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

fn free_text(t: &Option<String>) -> String {
    t.as_deref().map(neutralise).unwrap_or_default()
}

impl ReportRow {
    pub fn record(&self) -> [String; 26] {
        [
            self.user_id.clone(),
            // UPN characters are restricted (no = + @ at the start); ids too.
            self.user_principal_name.clone(),
            free_text(&self.display_name),
            self.user_type.clone(),
            self.account_enabled.to_string(),
            iso(self.created),
            iso(self.last_successful_sign_in),
            iso(self.last_interactive_sign_in),
            iso(self.last_non_interactive_sign_in),
            day(self.exchange_last_activity),
            day(self.onedrive_last_activity),
            day(self.sharepoint_last_activity),
            day(self.teams_last_activity),
            iso(self.last_activity),
            self.last_activity_source
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            self.days_inactive
                .map(|d| d.to_string())
                .unwrap_or_default(),
            self.licenses.join(";"),
            free_text(&self.department),
            free_text(&self.job_title),
            free_text(&self.manager_name),
            free_text(&self.manager_email),
            self.risk_flags
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(";"),
            self.verdict
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            self.recommended_action
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            self.phase.clone().unwrap_or_default(),
            iso(self.next_step_date),
        ]
    }
}

/// Streams rows into chunks of about `chunk_bytes` for a block upload.
pub struct CsvChunks {
    writer: csv::Writer<Vec<u8>>,
    chunk_bytes: usize,
    rows: u64,
}

impl CsvChunks {
    pub fn new(chunk_bytes: usize) -> Self {
        let mut chunks = Self::without_header(chunk_bytes);
        chunks
            .writer
            .write_record(COLUMNS)
            .expect("writing to a Vec cannot fail");
        chunks
    }

    /// Rows only: the parts of a report scanned in partitions, joined
    /// after one header.
    pub fn without_header(chunk_bytes: usize) -> Self {
        Self {
            writer: Self::writer(chunk_bytes),
            chunk_bytes,
            rows: 0,
        }
    }

    /// The header line alone.
    pub fn header() -> Vec<u8> {
        let mut w = Self::writer(256);
        w.write_record(COLUMNS)
            .expect("writing to a Vec cannot fail");
        w.into_inner().expect("flushing to a Vec cannot fail")
    }

    /// Adds a row; returns a full chunk when one is ready.
    pub fn push(&mut self, row: &ReportRow) -> Option<Vec<u8>> {
        self.writer
            .write_record(row.record())
            .expect("writing to a Vec cannot fail");
        self.rows += 1;
        // The csv writer keeps its own small buffer; flushing moves it into
        // the Vec (a memcpy) so the size check sees every byte.
        self.writer.flush().expect("flushing to a Vec cannot fail");
        let buffered = self.writer.get_ref().len();
        (buffered >= self.chunk_bytes).then(|| self.take())
    }

    /// Whatever is buffered (the last chunk).
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        let rest = self.take();
        (rest, self.rows)
    }

    fn writer(chunk_bytes: usize) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::with_capacity(chunk_bytes + 4096))
    }

    fn take(&mut self) -> Vec<u8> {
        let full = std::mem::replace(&mut self.writer, Self::writer(self.chunk_bytes));
        full.into_inner().expect("flushing to a Vec cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> ReportRow {
        ReportRow {
            user_id: format!("00000000-0000-4000-8000-{i:012}"),
            user_principal_name: format!("user{i}@contoso.com"),
            display_name: Some(format!("Doe, \"J{i}\"\nsecond line")),
            user_type: "Member".into(),
            account_enabled: true,
            licenses: vec!["ENTERPRISEPACK".into(), "EMS".into()],
            risk_flags: [RiskFlag::Guest, RiskFlag::Executive].into_iter().collect(),
            verdict: Some(Verdict::Inactive),
            recommended_action: Some(Action::Notify),
            days_inactive: Some(120),
            exchange_last_activity: NaiveDate::from_ymd_opt(2026, 7, 1),
            ..ReportRow::default()
        }
    }

    #[test]
    fn header_and_quoting_round_trip_through_a_reader() {
        let mut chunks = CsvChunks::new(1 << 20);
        for i in 0..3 {
            assert!(chunks.push(&row(i)).is_none());
        }
        let (bytes, rows) = chunks.finish();
        assert_eq!(rows, 3);
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let header: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(header, COLUMNS);
        let records: Vec<csv::StringRecord> =
            reader.records().map(|r| r.expect("record")).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(
            &records[1][2], "Doe, \"J1\"\nsecond line",
            "RFC 4180 quoting survives"
        );
        assert_eq!(&records[0][16], "ENTERPRISEPACK;EMS");
        assert_eq!(
            &records[0][21], "executive;guest",
            "flags in CONTRACT order"
        );
        assert_eq!(&records[0][9], "2026-07-01");
        assert_eq!(&records[0][5], "", "unknown dates are empty");
    }

    #[test]
    fn chunks_split_at_the_requested_size_and_concatenate_exactly() {
        let mut chunks = CsvChunks::new(512);
        let mut out = Vec::new();
        let mut emitted = 0;
        for i in 0..100 {
            if let Some(c) = chunks.push(&row(i)) {
                assert!(c.len() >= 512);
                emitted += 1;
                out.extend(c);
            }
        }
        let (rest, rows) = chunks.finish();
        out.extend(rest);
        assert!(emitted > 5);
        assert_eq!(rows, 100);
        let count = csv::Reader::from_reader(out.as_slice()).records().count();
        assert_eq!(count, 100);
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("+1"), "'+1");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("Jane"), "Jane");
    }
}
