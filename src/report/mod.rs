//! The report of a scan: `inactive-users.csv` (streamed in chunks),
//! `summary.json` and a self-contained `report.html`.

pub mod csv;
pub mod html;
pub mod stats;
pub mod summary;

pub use csv::{COLUMNS, CsvChunks, ReportRow};
pub use stats::{GuestStats, ReportStats};
pub use summary::{
    AttestationCounts, CaseCounts, DataQuality, DirectoryQuota, GuestSummary, Summary,
};
