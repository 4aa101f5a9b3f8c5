//! Plain data types shared by every snapshotter, mirroring containerd's snapshot API.

use std::collections::HashMap;
use std::time::SystemTime;

/// The lifecycle state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Read-only snapshot of a committed parent; cannot be committed.
    View,
    /// Writable snapshot; can be committed.
    Active,
    /// Immutable snapshot that can be a parent.
    Committed,
}

/// Metadata of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: HashMap<String, String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// One mount, as containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_type: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// Disk usage of a snapshot: bytes on disk (blocks) and inode count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}
