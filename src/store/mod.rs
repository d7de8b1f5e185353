//! store (filled by its issue).
