//! graph (filled by its issue).
