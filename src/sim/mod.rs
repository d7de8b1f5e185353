//! sim (filled by its issue).
