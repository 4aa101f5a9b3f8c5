//! berth-store (stub: being written)
