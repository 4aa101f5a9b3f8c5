//! berth-snapshot (stub: being written)
