//! Compaction (see the module below).
