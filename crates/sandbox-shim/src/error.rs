//! The sandbox shim answers with the same errors (and ttrpc codes) as berth's runc shim.
pub use berth_shim::error::{Error, Result};
