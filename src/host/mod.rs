//! host (filled by its issue).
