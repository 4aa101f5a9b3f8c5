//! berth-image (stub: being written)
