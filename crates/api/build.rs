//! Generates only the gRPC *server* side of containerd's services. The message types come from the
//! `containerd-client` crate (mapped with `extern_path`), and so do the `.proto` files: they are read
//! from the `containerd-client` package that cargo resolved, located through `cargo metadata`, so no
//! proto file is copied into this repository.

use std::path::PathBuf;
use std::process::Command;

const SERVICES: &[&str] = &[
    "containers/v1/containers.proto",
    "content/v1/content.proto",
    "diff/v1/diff.proto",
    "events/v1/events.proto",
    "images/v1/images.proto",
    "introspection/v1/introspection.proto",
    "leases/v1/leases.proto",
    "namespaces/v1/namespace.proto",
    "snapshots/v1/snapshots.proto",
    "streaming/v1/streaming.proto",
    "tasks/v1/tasks.proto",
    "transfer/v1/transfer.proto",
    "version/v1/version.proto",
];

/// Package prefixes whose messages already exist in `containerd-client`.
const EXTERN: &[(&str, &str)] = &[
    (
        ".containerd.types.transfer",
        "::containerd_client::types::transfer",
    ),
    (".containerd.v1.types", "::containerd_client::types::v1"),
    (".containerd.types", "::containerd_client::types"),
    (".containerd.events", "::containerd_client::events"),
    (".google.rpc", "::containerd_client::google::rpc"),
    (
        ".containerd.services.snapshots.v1",
        "::containerd_client::services::v1::snapshots",
    ),
    (
        ".containerd.services.sandbox.v1",
        "::containerd_client::services::v1::sandbox",
    ),
    (
        ".containerd.services.containers.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.content.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.diff.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.events.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.images.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.introspection.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.leases.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.namespaces.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.tasks.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.transfer.v1",
        "::containerd_client::services::v1",
    ),
    (
        ".containerd.services.version.v1",
        "::containerd_client::services::v1",
    ),
];

fn containerd_client_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("parse cargo metadata");
    let pkg = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "containerd-client")
        .expect("containerd-client in cargo metadata");
    PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"))
        .parent()
        .expect("package dir")
        .to_path_buf()
}

fn main() {
    let vendor = containerd_client_dir().join("vendor");
    let base = vendor.join("github.com/containerd/containerd/api/services");
    let protos: Vec<PathBuf> = SERVICES.iter().map(|s| base.join(s)).collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut cfg = tonic_prost_build::Config::new();
    cfg.protoc_arg("--experimental_allow_proto3_optional");
    let mut builder = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false);
    for (proto, rust) in EXTERN {
        builder = builder.extern_path(*proto, *rust);
    }
    builder
        .compile_with_config(cfg, &protos, &[vendor])
        .expect("generate containerd server traits");
}
