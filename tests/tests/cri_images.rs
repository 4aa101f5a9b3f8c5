//! Kubernetes CRI v1 on berthd's socket (first part): Version, Status, and the image service, with
//! images pulled from Debian's docker-registry on loopback into containerd's `k8s.io` namespace.

use berth_tests::registry::Registry;
use berth_tests::{layout_blob_json, oci_index_refs, runtime, test_images, Berthd};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[test]
fn version_and_status() {
    let d = Berthd::start();
    let rt = runtime();
    let mut runtime_svc = RuntimeServiceClient::new(rt.block_on(d.channel()));
    let v = rt
        .block_on(runtime_svc.version(VersionRequest {
            version: "v1".into(),
        }))
        .expect("version")
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    let st = rt
        .block_on(runtime_svc.status(StatusRequest { verbose: false }))
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    let cond = |t: &str| {
        st.conditions
            .iter()
            .find(|c| c.r#type == t)
            .expect(t)
            .clone()
    };
    assert!(cond("RuntimeReady").status);
    let net = cond("NetworkReady");
    assert!(!net.status);
    assert!(!net.reason.is_empty() && !net.message.is_empty(), "{net:?}");
    // A pod without its config is refused with the right code, naming what is missing.
    let err = rt
        .block_on(runtime_svc.run_pod_sandbox(RunPodSandboxRequest::default()))
        .expect_err("no config");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config"), "{}", err.message());
}

#[test]
fn pull_list_status_remove() {
    let images = test_images();
    let layout = images.join("oci");
    let reg = Registry::start();
    reg.push_layout(&layout, "busybox", "library/busybox");
    let d = Berthd::start();
    let rt = runtime();
    let mut img = ImageServiceClient::new(rt.block_on(d.channel()));
    let reference = format!("{}/library/busybox:busybox", reg.host());

    let (_, manifest_digest) = oci_index_refs(&layout)
        .into_iter()
        .find(|(n, _)| n == "busybox")
        .expect("busybox");
    let manifest = layout_blob_json(&layout, &manifest_digest);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config")
        .to_string();

    let pulled = rt
        .block_on(img.pull_image(PullImageRequest {
            image: spec(&reference),
            ..Default::default()
        }))
        .expect("pull")
        .into_inner();
    assert_eq!(
        pulled.image_ref, config_digest,
        "CRI image id is the config digest"
    );

    let list = rt
        .block_on(img.list_images(ListImagesRequest::default()))
        .expect("list")
        .into_inner()
        .images;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, config_digest);
    assert_eq!(list[0].repo_tags, vec![reference.clone()]);
    assert_eq!(
        list[0].repo_digests,
        vec![format!("{}/library/busybox@{manifest_digest}", reg.host())]
    );
    assert!(list[0].size > 1_000_000, "size {}", list[0].size);

    for by in [
        reference.as_str(),
        config_digest.as_str(),
        &config_digest[7..19],
    ] {
        let st = rt
            .block_on(img.image_status(ImageStatusRequest {
                image: spec(by),
                verbose: false,
            }))
            .expect("status")
            .into_inner();
        assert_eq!(
            st.image.map(|i| i.id),
            Some(config_digest.clone()),
            "lookup by {by}"
        );
    }
    let none = rt
        .block_on(img.image_status(ImageStatusRequest {
            image: spec("example.com/not/here:1"),
            verbose: false,
        }))
        .expect("status of a missing image is not an error")
        .into_inner();
    assert!(none.image.is_none());

    // CRI images are containerd's k8s.io images.
    assert!(d
        .ctr("k8s.io", &["images", "ls", "-q"])
        .ok()
        .stdout
        .contains(&reference));

    let fs = rt
        .block_on(img.image_fs_info(ImageFsInfoRequest {}))
        .expect("fs info")
        .into_inner();
    assert!(
        fs.image_filesystems[0]
            .used_bytes
            .as_ref()
            .map(|u| u.value)
            .unwrap_or(0)
            > 0
    );

    rt.block_on(img.remove_image(RemoveImageRequest {
        image: spec(&config_digest),
    }))
    .expect("remove");
    assert!(rt
        .block_on(img.list_images(ListImagesRequest::default()))
        .expect("list")
        .into_inner()
        .images
        .is_empty());
    rt.block_on(img.remove_image(RemoveImageRequest {
        image: spec(&config_digest),
    }))
    .expect("removing a removed image succeeds");

    let err = rt
        .block_on(img.pull_image(PullImageRequest {
            image: spec(&format!("{}/library/missing:1", reg.host())),
            ..Default::default()
        }))
        .expect_err("pulled a missing image");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("missing"), "{}", err.message());
}

#[test]
fn pull_with_cri_auth_config() {
    let images = test_images();
    let reg = Registry::start_with_htpasswd("kube", "let-me-in");
    reg.push_layout_as(
        &images.join("oci"),
        "busybox",
        "private/busybox",
        Some("kube:let-me-in"),
    );
    let d = Berthd::start();
    let rt = runtime();
    let mut img = ImageServiceClient::new(rt.block_on(d.channel()));
    let reference = format!("{}/private/busybox:busybox", reg.host());
    let err = rt
        .block_on(img.pull_image(PullImageRequest {
            image: spec(&reference),
            ..Default::default()
        }))
        .expect_err("pulled without credentials");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    // The kubelet's form: `auth` = base64("user:password").
    rt.block_on(img.pull_image(PullImageRequest {
        image: spec(&reference),
        auth: Some(AuthConfig {
            auth: "a3ViZTpsZXQtbWUtaW4=".into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .expect("pull with auth config");
}
