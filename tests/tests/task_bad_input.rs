//! Bad requests to the Tasks service get containerd's codes and leave nothing behind.

use std::collections::HashMap;

use berth_tests::client::req;
use berth_tests::{runtime, test_images, Berthd};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    container::Runtime, Container, CreateContainerRequest, CreateTaskRequest, KillRequest,
    StartRequest,
};
use tonic::Code;

fn container(id: &str, spec: &[u8]) -> Container {
    Container {
        id: id.into(),
        runtime: Some(Runtime {
            name: "io.containerd.berth.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: spec.to_vec(),
        }),
        labels: HashMap::new(),
        ..Default::default()
    }
}

#[test]
fn invalid_spec_is_an_invalid_argument() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let ns = d.unique_ns();
    rt.block_on(ContainersClient::new(ch.clone()).create(req(
        &ns,
        CreateContainerRequest {
            container: Some(container("badspec", b"{ this is not json")),
        },
    )))
    .expect("container records accept any bytes, as containerd's do");
    let err = rt
        .block_on(TasksClient::new(ch.clone()).create(req(
            &ns,
            CreateTaskRequest {
                container_id: "badspec".into(),
                ..Default::default()
            },
        )))
        .expect_err("task created from an invalid spec");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("spec"), "{}", err.message());
    let bundles = std::fs::read_dir(d.state().join("runtime").join(&ns))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0, "a bundle was left behind");
}

#[test]
fn unknown_tasks_and_containers_are_not_found() {
    let d = Berthd::start();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let ns = d.unique_ns();
    let mut tasks = TasksClient::new(ch.clone());
    let err = rt
        .block_on(tasks.kill(req(
            &ns,
            KillRequest {
                container_id: "ghost".into(),
                signal: 9,
                ..Default::default()
            },
        )))
        .expect_err("killed a ghost");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = rt
        .block_on(tasks.create(req(
            &ns,
            CreateTaskRequest {
                container_id: "ghost".into(),
                ..Default::default()
            },
        )))
        .expect_err("task for a missing container");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
}

#[test]
fn starting_a_running_task_is_a_failed_precondition() {
    let d = Berthd::start();
    let ns = d.unique_ns();
    let tar = test_images().join("busybox-oci.tar");
    d.ctr(&ns, &["images", "import", tar.to_str().expect("path")])
        .ok();
    d.ctr(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            "io.containerd.berth.v2",
            "docker.io/library/busybox:latest",
            "up",
            "sleep",
            "1000",
        ],
    )
    .ok();
    let rt = runtime();
    let ch = rt.block_on(d.channel());
    let err = rt
        .block_on(TasksClient::new(ch).start(req(
            &ns,
            StartRequest {
                container_id: "up".into(),
                exec_id: String::new(),
            },
        )))
        .expect_err("started twice");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}
