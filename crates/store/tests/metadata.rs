//! Namespaces, images, containers and leases: CRUD, field paths, filters, validation.

mod common;

use std::time::{Duration, SystemTime};

use berth_store::{
    AnyBlob, Container, Descriptor, ErrorKind, Filter, Image, Labels, LeaseResource, Runtime,
};
use common::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn image(name: &str, digest: &str) -> Image {
    Image {
        name: name.into(),
        labels: Labels::new(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: digest.into(),
            size: 100,
            annotations: Default::default(),
        },
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

fn container(id: &str) -> Container {
    Container {
        id: id.into(),
        labels: labels(&[("app", "web")]),
        image: "docker.io/library/alpine:latest".into(),
        runtime: Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        },
        spec: Some(AnyBlob {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{\"ociVersion\":\"1.0.2\"}".to_vec(),
        }),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.into(),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        extensions: Default::default(),
        sandbox: String::new(),
    }
}

#[test]
fn namespace_crud_and_updates() {
    let (_dir, s) = store();
    s.namespace_create("ns1", labels(&[("a", "1"), ("b", "2")]))
        .expect("create");
    assert_eq!(
        s.namespace_create("ns1", Labels::new())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.namespace_create("bad/ns", Labels::new())
            .expect_err("bad")
            .kind(),
        ErrorKind::InvalidArgument
    );
    s.namespace_ensure("ns2").expect("ensure");
    s.namespace_ensure("ns2").expect("ensure twice");
    let names: Vec<String> = s
        .namespace_list()
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["ns1", "ns2"]);

    let u = s
        .namespace_update(
            "ns1",
            labels(&[("a", "9"), ("c", "3")]),
            &["labels.a".into(), "labels.b".into()],
        )
        .expect("update");
    assert_eq!(u.labels, labels(&[("a", "9")]));
    let u = s
        .namespace_update("ns1", labels(&[("z", "z")]), &[])
        .expect("replace");
    assert_eq!(u.labels, labels(&[("z", "z")]));
    assert_eq!(
        s.namespace_get("ns1").expect("get").labels,
        labels(&[("z", "z")])
    );
    assert_eq!(
        s.namespace_update("ns1", Labels::new(), &["name".into()])
            .expect_err("field")
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.namespace_update("nope", Labels::new(), &[])
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );

    s.namespace_delete("ns2").expect("delete");
    assert_eq!(
        s.namespace_get("ns2").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.namespace_delete("ns2").expect_err("again").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn namespace_delete_refused_while_holding_things() {
    let (_dir, s) = store();
    s.image_create("busy", image("img", D1)).expect("image");
    let d = put(&s, "busy", b"blob", Labels::new());
    s.lease_create("busy", "l", Labels::new()).expect("lease");
    // Writes created the namespace implicitly.
    s.namespace_get("busy").expect("implicit namespace");

    let err = s.namespace_delete("busy").expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let msg = err.to_string();
    for what in ["images", "content", "leases"] {
        assert!(msg.contains(what), "{msg}");
    }
    s.image_delete("busy", "img").expect("rm image");
    s.content_delete("busy", &d).expect("rm content");
    s.lease_delete("busy", "l").expect("rm lease");
    let err = s
        .namespace_delete_with("busy", true)
        .expect_err("snapshots");
    assert!(err.to_string().contains("snapshots"), "{err}");
    s.container_create("busy", container("c1"))
        .expect("container");
    assert!(s
        .namespace_delete("busy")
        .expect_err("container")
        .to_string()
        .contains("containers"));
    s.container_delete("busy", "c1").expect("rm container");
    s.namespace_delete("busy").expect("now empty");
}

#[test]
fn image_crud_and_field_paths() {
    let (_dir, s) = store();
    let before = SystemTime::now() - Duration::from_secs(1);
    let mut img = image("docker.io/library/alpine:latest", D1);
    img.labels = labels(&[("a", "1")]);
    let created = s.image_create("default", img.clone()).expect("create");
    assert!(created.created_at > before);
    assert_eq!(
        s.image_create("default", img.clone())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(s.image_get("default", &img.name).expect("get"), created);
    assert_eq!(
        s.image_get("other", &img.name).expect_err("ns").kind(),
        ErrorKind::NotFound
    );

    // Field-path updates.
    let mut upd = img.clone();
    upd.labels = labels(&[("b", "2")]);
    upd.target.digest = D2.into();
    upd.target.annotations = [("ann".to_string(), "x".to_string())].into();
    let u = s
        .image_update("default", upd.clone(), &["labels.b".into()])
        .expect("labels.b");
    assert_eq!(u.labels, labels(&[("a", "1"), ("b", "2")]));
    assert_eq!(u.target.digest, D1);
    let u = s
        .image_update("default", upd.clone(), &["annotations".into()])
        .expect("annotations");
    assert_eq!(u.target.annotations["ann"], "x");
    assert_eq!(u.target.digest, D1);
    let u = s
        .image_update("default", upd.clone(), &["target".into(), "labels".into()])
        .expect("target");
    assert_eq!(u.target.digest, D2);
    assert_eq!(u.labels, labels(&[("b", "2")]));
    assert_eq!(u.created_at, created.created_at);
    assert!(u.updated_at >= created.updated_at);
    assert_eq!(
        s.image_update("default", upd.clone(), &["name".into()])
            .expect_err("name")
            .kind(),
        ErrorKind::InvalidArgument
    );
    let mut bad = upd.clone();
    bad.target.digest = "sha256:nothex".into();
    assert_eq!(
        s.image_update("default", bad, &["target".into()])
            .expect_err("bad digest")
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.image_update("default", image("missing", D1), &[])
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );
    let u = s
        .image_update("default", image(&img.name, D1), &[])
        .expect("replace all");
    assert!(u.labels.is_empty());
    assert_eq!(u.target.digest, D1);

    // Validation.
    for bad in [
        image("", D1),
        image("x", "sha512:abcd"),
        image("x", "sha256:123"),
    ] {
        assert_eq!(
            s.image_create("default", bad).expect_err("invalid").kind(),
            ErrorKind::InvalidArgument
        );
    }
    let mut no_mt = image("x", D1);
    no_mt.target.media_type.clear();
    assert_eq!(
        s.image_create("default", no_mt).expect_err("mt").kind(),
        ErrorKind::InvalidArgument
    );

    // Listing with filters.
    let mut busybox = image("docker.io/library/busybox:1.36", D2);
    busybox.labels = labels(&[("io.cri-containerd.image", "managed")]);
    s.image_create("default", busybox).expect("create");
    let names = |f: &[&str]| -> Vec<String> {
        s.image_list("default", &filter(f))
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(&[]).len(), 2);
    assert_eq!(
        names(&["name~=busybox"]),
        vec!["docker.io/library/busybox:1.36"]
    );
    assert_eq!(
        names(&[&format!("target.digest=={D1}")]),
        vec!["docker.io/library/alpine:latest"]
    );
    assert_eq!(
        names(&[r#"labels."io.cri-containerd.image"==managed"#]),
        vec!["docker.io/library/busybox:1.36"]
    );
    assert_eq!(names(&["name~=alpine", "name~=busybox"]).len(), 2);
    assert_eq!(names(&["name~=alpine,target.mediatype~=index"]).len(), 1);

    s.image_delete("default", &img.name).expect("delete");
    assert_eq!(
        s.image_delete("default", &img.name)
            .expect_err("again")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(names(&[]).len(), 1);
}

#[test]
fn container_crud_and_field_paths() {
    let (_dir, s) = store();
    let c = s
        .container_create("default", container("web"))
        .expect("create");
    assert_eq!(
        s.container_create("default", container("web"))
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(s.container_get("default", "web").expect("get"), c);

    let mut upd = container("web");
    upd.labels = labels(&[("tier", "front")]);
    upd.image = "docker.io/library/nginx:latest".into();
    upd.snapshot_key = "web-2".into();
    upd.snapshotter = "native".into();
    upd.runtime.name = "io.containerd.runsc.v1".into();
    upd.sandbox = "pod1".into();
    upd.extensions = [(
        "ext".to_string(),
        AnyBlob {
            type_url: "t".into(),
            value: vec![1, 2, 3],
        },
    )]
    .into();
    let u = s
        .container_update(
            "default",
            upd.clone(),
            &[
                "labels.tier".into(),
                "image".into(),
                "extensions.ext".into(),
            ],
        )
        .expect("update");
    assert_eq!(u.labels, labels(&[("app", "web"), ("tier", "front")]));
    assert_eq!(u.image, "docker.io/library/nginx:latest");
    assert_eq!(u.extensions["ext"].value, vec![1, 2, 3]);
    assert_eq!(u.snapshot_key, "web");
    let u = s
        .container_update(
            "default",
            upd.clone(),
            &[
                "snapshotkey".into(),
                "snapshotter".into(),
                "runtime".into(),
                "sandbox".into(),
            ],
        )
        .expect("update 2");
    assert_eq!(
        (u.snapshot_key.as_str(), u.snapshotter.as_str()),
        ("web-2", "native")
    );
    assert_eq!(u.runtime.name, "io.containerd.runsc.v1");
    assert_eq!(u.sandbox, "pod1");
    assert_eq!(u.created_at, c.created_at);

    // Full replace refuses to change immutable fields.
    let mut other_rt = u.clone();
    other_rt.runtime.name = "io.containerd.runc.v2".into();
    assert_eq!(
        s.container_update("default", other_rt, &[])
            .expect_err("immutable")
            .kind(),
        ErrorKind::InvalidArgument
    );
    let mut full = u.clone();
    full.labels = Labels::new();
    full.spec = Some(AnyBlob {
        type_url: "x".into(),
        value: vec![9],
    });
    let r = s.container_update("default", full, &[]).expect("full");
    assert!(r.labels.is_empty());
    assert_eq!(r.spec.as_ref().map(|a| a.value.clone()), Some(vec![9]));
    assert_eq!(
        s.container_update("default", upd.clone(), &["id".into()])
            .expect_err("id")
            .kind(),
        ErrorKind::InvalidArgument
    );
    let mut no_spec = upd.clone();
    no_spec.spec = None;
    assert_eq!(
        s.container_update("default", no_spec, &["spec".into()])
            .expect_err("spec")
            .kind(),
        ErrorKind::InvalidArgument
    );

    // Validation on create.
    let mut bad = container("bad id");
    assert_eq!(
        s.container_create("default", bad.clone())
            .expect_err("id")
            .kind(),
        ErrorKind::InvalidArgument
    );
    bad = container("ok");
    bad.runtime.name.clear();
    assert_eq!(
        s.container_create("default", bad).expect_err("rt").kind(),
        ErrorKind::InvalidArgument
    );

    // List with filters.
    let mut db = container("db");
    db.runtime.name = "io.containerd.runsc.v1".into();
    db.labels = labels(&[("app", "db")]);
    s.container_create("default", db).expect("db");
    let ids = |f: &[&str]| -> Vec<String> {
        s.container_list("default", &filter(f))
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids(&[]), vec!["db", "web"]);
    assert_eq!(ids(&["labels.app==db"]), vec!["db"]);
    assert_eq!(
        ids(&["runtime.name==io.containerd.runsc.v1"]),
        vec!["db", "web"]
    );
    assert_eq!(ids(&["snapshotter==native"]), vec!["web"]);
    assert_eq!(ids(&["id==web", "id==db"]), vec!["db", "web"]);
    assert!(s
        .container_list("other", &Filter::all())
        .expect("other")
        .is_empty());

    s.container_delete("default", "web").expect("delete");
    assert_eq!(
        s.container_get("default", "web").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn lease_crud_and_resources() {
    let (_dir, s) = store();
    let l = s
        .lease_create("default", "pull-1", labels(&[("purpose", "pull")]))
        .expect("create");
    assert_eq!(l.id, "pull-1");
    assert_eq!(
        s.lease_create("default", "pull-1", Labels::new())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.lease_create("default", "bad id", Labels::new())
            .expect_err("id")
            .kind(),
        ErrorKind::InvalidArgument
    );
    // containerd clients name leases `<nanos>-<url-safe base64>`: ctr's import failed on this.
    s.lease_create("default", "568228544-t9k_-Q==", Labels::new())
        .expect("ctr-style lease id");
    s.lease_delete("default", "568228544-t9k_-Q==")
        .expect("delete ctr-style lease");
    s.lease_create("default", "other", Labels::new())
        .expect("other");
    let ids: Vec<String> = s
        .lease_list("default", &filter(&["labels.purpose==pull"]))
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, vec!["pull-1"]);
    assert_eq!(
        s.lease_list("default", &Filter::all()).expect("all").len(),
        2
    );

    let content = LeaseResource {
        id: D1.into(),
        kind: "content".into(),
    };
    let snap = LeaseResource {
        id: "extract-1".into(),
        kind: "snapshots/overlayfs".into(),
    };
    s.lease_add_resource("default", "pull-1", content.clone())
        .expect("add");
    s.lease_add_resource("default", "pull-1", snap.clone())
        .expect("add");
    s.lease_add_resource("default", "pull-1", content.clone())
        .expect("idempotent");
    let mut res = s.lease_list_resources("default", "pull-1").expect("res");
    res.sort();
    let mut want = vec![content.clone(), snap.clone()];
    want.sort();
    assert_eq!(res, want);
    assert!(s
        .lease_list_resources("default", "other")
        .expect("other")
        .is_empty());

    for bad in [
        LeaseResource {
            id: "x".into(),
            kind: "content".into(),
        },
        LeaseResource {
            id: "x".into(),
            kind: "bogus".into(),
        },
        LeaseResource {
            id: "x".into(),
            kind: "snapshots/".into(),
        },
        LeaseResource {
            id: "".into(),
            kind: "ingests".into(),
        },
    ] {
        assert_eq!(
            s.lease_add_resource("default", "pull-1", bad)
                .expect_err("bad")
                .kind(),
            ErrorKind::InvalidArgument
        );
    }
    assert_eq!(
        s.lease_add_resource("default", "nope", content.clone())
            .expect_err("no lease")
            .kind(),
        ErrorKind::NotFound
    );

    s.lease_delete_resource("default", "pull-1", content)
        .expect("del res");
    assert_eq!(
        s.lease_list_resources("default", "pull-1").expect("res"),
        vec![snap]
    );

    s.lease_delete("default", "pull-1").expect("delete");
    assert_eq!(
        s.lease_delete("default", "pull-1")
            .expect_err("again")
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.lease_list_resources("default", "pull-1")
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
    // Re-creating the lease does not resurrect old resources.
    s.lease_create("default", "pull-1", Labels::new())
        .expect("recreate");
    assert!(s
        .lease_list_resources("default", "pull-1")
        .expect("res")
        .is_empty());
}

#[test]
fn labels_are_bounded() {
    let (_dir, s) = store();
    let big = labels(&[("k", &"v".repeat(5000))]);
    assert_eq!(
        s.lease_create("default", "l", big.clone())
            .expect_err("big")
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.namespace_create("n", big.clone())
            .expect_err("big")
            .kind(),
        ErrorKind::InvalidArgument
    );
    let mut img = image("i", D1);
    img.labels = big;
    assert_eq!(
        s.image_create("default", img).expect_err("big").kind(),
        ErrorKind::InvalidArgument
    );
}
