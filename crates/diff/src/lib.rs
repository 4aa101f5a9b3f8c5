//! berth-diff (stub: being written)
