//! functions (filled by its issue).
