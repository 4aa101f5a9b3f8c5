//! Harness for the CRI runtime tests: a test registry holding pause/busybox/httpd, a CNI conflist on
//! a bridge and subnet no other test uses, and a berthd configured with both, driven through the
//! kubelet's own client types (`k8s_cri::v1`).
//!
//! The network slot (bridge name, /24 subnet) is reserved with an flock under /tmp, so tests in
//! other processes and other test binaries never pick the same one; a slot whose bridge or subnet
//! already exists on the host (someone else's) is skipped.
//!
//! `CriEnv`'s `Drop` stops berthd first (which kills its shims and containers and unmounts its
//! dirs), then deletes what the CNI plugins and runc left in host-global places: the bridge and
//! its veths, iptables rules mentioning this test's network, cgroups under this test's parent.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use tonic::Status;

use crate::daemon::mounts_under;
use crate::registry::Registry;
use crate::{test_images, Berthd};

/// The kubelet's pod namespace for every test pod.
pub const POD_NAMESPACE: &str = "berth-e2e";

/// Where the tests reserve network slots (one lock file per /24).
const SLOT_DIR: &str = "/tmp/berth-cri-test-nets";

/// A /24 and a bridge name held by this process until dropped.
struct NetSlot {
    /// Held (flock) until the test ends; the kernel drops it if the test dies.
    _lock: nix::fcntl::Flock<File>,
    second: u32,
    third: u32,
}

impl NetSlot {
    /// 10.<200+counter>.<pid%250>.0/24, moving on to the next candidate while one is locked by
    /// another test or in use on the host.
    fn reserve() -> NetSlot {
        std::fs::create_dir_all(SLOT_DIR).expect("slot dir");
        let pid = std::process::id();
        let routes = cmd_out("ip", &["-o", "-4", "addr"]) + &cmd_out("ip", &["-4", "route"]);
        let links = cmd_out("ip", &["-o", "link"]);
        for counter in 0..55u32 {
            for step in 0..250u32 {
                let (second, third) = (200 + counter, (pid + step) % 250);
                let prefix = format!("10.{second}.{third}.");
                let bridge = bridge_name(second, third);
                if routes.contains(&prefix) || links.contains(&format!(": {bridge}:")) {
                    continue;
                }
                let Ok(file) = File::create(format!("{SLOT_DIR}/10.{second}.{third}.lock")) else {
                    continue;
                };
                if let Ok(lock) =
                    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                {
                    return NetSlot {
                        _lock: lock,
                        second,
                        third,
                    };
                }
            }
        }
        panic!("no free test network slot 10.200-254.x.0/24");
    }
}

fn bridge_name(second: u32, third: u32) -> String {
    // "bcri" + up to 3 + "x" + up to 3 digits: at most 11 of Linux's 15 characters.
    format!("bcri{second}x{third}")
}

fn cmd_out(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The CRI clients, cloneable into tokio tasks; records every pod and container id it creates so
/// the guard can find what they left behind.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    ids: Arc<Mutex<Vec<String>>>,
}

impl Cri {
    fn track(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.to_string());
        }
    }

    pub async fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Status> {
        let id = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.track(&id);
        Ok(id)
    }

    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, Status> {
        let id = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        self.track(&id);
        Ok(id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await?;
        Ok(())
    }

    /// CreateContainer + StartContainer.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, Status> {
        let id = self.create_container(pod_id, pod, config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    pub async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, Status> {
        self.runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| Status::internal("PodSandboxStatus without a status"))
    }

    pub async fn container_status(&mut self, id: &str) -> Result<ContainerStatus, Status> {
        self.runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| Status::internal("ContainerStatus without a status"))
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_pod(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await?;
        Ok(())
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse, Status> {
        Ok(self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_secs,
            })
            .await?
            .into_inner())
    }

    pub async fn list_pods(
        &mut self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, Status> {
        Ok(self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await?
            .into_inner()
            .items)
    }

    pub async fn list_containers(
        &mut self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, Status> {
        Ok(self
            .runtime
            .list_containers(ListContainersRequest { filter })
            .await?
            .into_inner()
            .containers)
    }
}

/// What pods leave on the host, for "nothing is left over" assertions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Network namespace files: nsfs mounts under berthd's dir, entries of `netns` dirs in state.
    pub netns: BTreeSet<PathBuf>,
    /// Interfaces enslaved to this test's bridge.
    pub veths: BTreeSet<String>,
    /// host-local allocations (one file per IP) in this test's ipam dir.
    pub ip_files: BTreeSet<PathBuf>,
    /// Mounts under the test dir, and under berthd's dir that were not there at start.
    pub mounts: BTreeSet<PathBuf>,
    /// cgroups below the pod level of this test's cgroup parent (sandboxes' and containers').
    pub cgroups: BTreeSet<PathBuf>,
    /// iptables rules added since the start that name this test's network, subnet or pod and
    /// container ids (portmap's DNAT rules carry the sandbox id).
    pub iptables: BTreeSet<String>,
}

impl Footprint {
    pub fn is_empty(&self) -> bool {
        *self == Footprint::default()
    }
}

/// Knobs for `CriEnv::start_with`.
#[derive(Default)]
pub struct Options {
    /// `[cri] sandbox_image`; default: the test registry's pause:latest.
    pub sandbox_image: Option<String>,
    /// More berthd TOML, appended to the test's config (e.g. a `[sandbox]` section).
    pub extra_config: String,
}

/// One test's CRI world. See the module docs.
pub struct CriEnv {
    pub cri: Cri,
    /// net.d, ipam data, pod logs.
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    /// Unique per test: names cgroups and the CNI network.
    pub id: String,
    pub bridge: String,
    /// e.g. `10.201.37.0/24`.
    pub subnet: String,
    /// e.g. `10.201.37.`: every pod IP starts with it.
    pub ip_prefix: String,
    /// The conflist's `name` (host-local keeps its files in `<ipam dir>/<name>`).
    pub net_name: String,
    /// First component of every pod's cgroup_parent.
    pub cgroup_root: String,
    d: Option<Berthd>,
    baseline_mounts: BTreeSet<PathBuf>,
    iptables_before: HashSet<String>,
    pod_counter: std::sync::atomic::AtomicU32,
    // Last: the runtime outlives the clients' channels, the slot lock outlives the cleanup.
    pub rt: tokio::runtime::Runtime,
    _slot: NetSlot,
}

impl CriEnv {
    pub fn start() -> CriEnv {
        CriEnv::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> CriEnv {
        let slot = NetSlot::reserve();
        let (second, third) = (slot.second, slot.third);
        let pid = std::process::id();
        let id = format!("{pid}-{second}x{third}");
        let dir = tempfile::Builder::new()
            .prefix("berth-cri-")
            .tempdir()
            .expect("test dir");
        let bridge = bridge_name(second, third);
        let subnet = format!("10.{second}.{third}.0/24");
        let ip_prefix = format!("10.{second}.{third}.");
        let net_name = format!("berth-e2e-{second}x{third}");
        let cgroup_root = format!("berth-test-{id}");
        let iptables_before = iptables_rules();

        let registry = Registry::start();
        push_test_images(&registry);

        let net_d = dir.path().join("net.d");
        std::fs::create_dir_all(&net_d).expect("net.d");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net_name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.path().join("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(
            net_d.join("10-berth-e2e.conflist"),
            serde_json::to_vec_pretty(&conflist).expect("conflist json"),
        )
        .expect("write conflist");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");

        let sandbox_image = opts
            .sandbox_image
            .unwrap_or_else(|| format!("{}/pause:latest", registry.host()));
        let d = Berthd::start_with_config(&format!(
            "{}{}",
            berthd_config(&sandbox_image, &net_d),
            opts.extra_config
        ));
        let baseline_mounts = mounts_under(d.dir.path()).into_iter().collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let cri = connect(&rt, &d, Arc::new(Mutex::new(Vec::new())));
        let env = CriEnv {
            cri,
            dir,
            registry,
            id,
            bridge,
            subnet,
            ip_prefix,
            net_name,
            cgroup_root,
            d: Some(d),
            baseline_mounts,
            iptables_before,
            pod_counter: Default::default(),
            rt,
            _slot: slot,
        };
        for image in ["busybox", "httpd"] {
            env.pull(&env.image(image));
        }
        env
    }

    pub fn daemon(&self) -> &Berthd {
        self.d.as_ref().expect("berthd")
    }

    /// For `kill9()` / `spawn()`; call `reconnect()` afterwards.
    pub fn daemon_mut(&mut self) -> &mut Berthd {
        self.d.as_mut().expect("berthd")
    }

    /// New clients on berthd's socket (after a restart).
    pub fn reconnect(&mut self) {
        let ids = self.cri.ids.clone();
        self.cri = connect(&self.rt, self.daemon(), ids);
    }

    /// Rewrites berthd's config with another sandbox image and restarts it (SIGKILL + spawn).
    pub fn set_sandbox_image(&mut self, image: &str) {
        let config = berthd_config(image, &self.dir.path().join("net.d"));
        let d = self.daemon_mut();
        std::fs::write(d.dir.path().join("config.toml"), config).expect("rewrite config");
        d.restart();
        self.reconnect();
    }

    /// `<registry>/<name>:latest`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}:latest", self.registry.host())
    }

    pub fn pull(&self, image: &str) -> String {
        let mut images = self.cri.images.clone();
        self.rt
            .block_on(images.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
            .into_inner()
            .image_ref
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A pod config as the kubelet sends it: metadata, a log directory (created, as the kubelet
    /// does), a cgroup parent under this test's root, PID namespace CONTAINER (the kubelet's
    /// default for v1 pods), network and IPC POD.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let n = self
            .pod_counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let uid = format!("uid-{}-{n}-{name}", self.id);
        let log_directory = self.dir.path().join("logs").join(&uid);
        std::fs::create_dir_all(&log_directory).expect("pod log dir");
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: [("app".to_string(), name.to_string())].into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{uid}", self.cgroup_root),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config with `<name>.log` in the pod's log directory and the pod's namespace
    /// options; an empty `command` keeps the image's entrypoint and cmd.
    pub fn container_config(
        &self,
        pod: &PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> ContainerConfig {
        let ns = pod
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image(image),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            labels: [("container".to_string(), name.to_string())].into(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: ns,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container's log file: the pod's log_directory joined with its log_path.
    pub fn log_file(&self, pod: &PodSandboxConfig, c: &ContainerConfig) -> PathBuf {
        Path::new(&pod.log_directory).join(&c.log_path)
    }

    pub fn run_pod(&self, config: &PodSandboxConfig) -> String {
        self.try_run_pod(config, "")
            .unwrap_or_else(|e| panic!("RunPodSandbox {:?}: {e}", config.metadata))
    }

    pub fn try_run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String, Status> {
        let mut c = self.cri.clone();
        self.rt.block_on(c.run_pod(config, handler))
    }

    pub fn run_container(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        c: &ContainerConfig,
    ) -> String {
        let mut cri = self.cri.clone();
        self.rt
            .block_on(cri.run_container(pod_id, pod, c))
            .unwrap_or_else(|e| panic!("create+start container {:?}: {e}", c.metadata))
    }

    pub fn pod_status(&self, id: &str) -> PodSandboxStatus {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.pod_status(id))
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"))
    }

    pub fn pod_ip(&self, id: &str) -> String {
        self.pod_status(id)
            .network
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.container_status(id))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.exec_sync(id, cmd, 30))
            .unwrap_or_else(|e| panic!("ExecSync {id} {cmd:?}: {e}"))
    }

    pub fn stop_pod(&self, id: &str) {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.stop_pod(id))
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"))
    }

    pub fn remove_pod(&self, id: &str) {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.remove_pod(id))
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"))
    }

    pub fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.list_pods(filter))
            .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
    }

    pub fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        let mut c = self.cri.clone();
        self.rt
            .block_on(c.list_containers(filter))
            .unwrap_or_else(|e| panic!("ListContainers: {e}"))
    }

    /// Polls ContainerStatus until the container has exited (30 s).
    pub fn wait_exited(&self, id: &str) -> ContainerStatus {
        let mut last = None;
        wait_for(
            &format!("container {id} to exit"),
            Duration::from_secs(30),
            || {
                let st = self.container_status(id);
                let done = st.state == ContainerState::ContainerExited as i32;
                last = Some(st);
                done
            },
        );
        last.expect("status")
    }

    /// Runs a container to completion: (exit code, its log's lines).
    pub fn run_to_exit(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        c: &ContainerConfig,
    ) -> (i32, Vec<LogLine>) {
        let id = self.run_container(pod_id, pod, c);
        let st = self.wait_exited(&id);
        let file = self.log_file(pod, c);
        // The log may be flushed a moment after the exit is reported: read it once it has stopped
        // changing for 300 ms (at most 5 s).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut stable = 0;
        while stable < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = std::fs::read_to_string(&file).unwrap_or_default();
            stable = if now == text { stable + 1 } else { 0 };
            text = now;
        }
        (st.exit_code, parse_log(&text))
    }

    /// The host-local allocation file of `ip`.
    pub fn ip_file(&self, ip: &str) -> PathBuf {
        self.dir.path().join("ipam").join(&self.net_name).join(ip)
    }

    /// Everything pods of this test hold on the host right now.
    pub fn footprint(&self) -> Footprint {
        let d = self.daemon();
        let mut fp = Footprint::default();
        for (point, fstype) in mountinfo() {
            if fstype == "nsfs" && point.starts_with(d.dir.path()) {
                fp.netns.insert(point);
            }
        }
        for netns_dir in dirs_named(&d.state(), "netns") {
            for e in std::fs::read_dir(netns_dir).into_iter().flatten().flatten() {
                fp.netns.insert(e.path());
            }
        }
        fp.veths = self.veths();
        let ipam = self.dir.path().join("ipam").join(&self.net_name);
        for e in std::fs::read_dir(&ipam).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "lock" && !name.starts_with("last_reserved_ip") {
                fp.ip_files.insert(e.path());
            }
        }
        fp.mounts.extend(mounts_under(self.dir.path()));
        fp.mounts.extend(
            mounts_under(d.dir.path())
                .into_iter()
                .filter(|m| !self.baseline_mounts.contains(m)),
        );
        for root in cgroup_roots(&self.cgroup_root) {
            for pod in subdirs(&root) {
                fp.cgroups.extend(subdirs(&pod));
            }
        }
        let needles = self.needles();
        fp.iptables = iptables_rules()
            .into_iter()
            .filter(|r| !self.iptables_before.contains(r) && needles.iter().any(|n| r.contains(n)))
            .collect();
        fp
    }

    /// Strings that only this test's iptables rules contain.
    fn needles(&self) -> Vec<String> {
        let mut needles = vec![
            self.net_name.clone(),
            self.subnet.clone(),
            self.bridge.clone(),
        ];
        needles.extend(self.tracked_ids());
        needles
    }

    /// Interfaces enslaved to this test's bridge.
    pub fn veths(&self) -> BTreeSet<String> {
        cmd_out("ip", &["-o", "link", "show", "master", &self.bridge])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn assert_no_footprint(&self, when: &str) {
        // Teardown of a netns and its veth is asynchronous in the kernel: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut fp = self.footprint();
        while !fp.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            fp = self.footprint();
        }
        assert!(fp.is_empty(), "left over {when}: {fp:#?}");
    }

    fn tracked_ids(&self) -> Vec<String> {
        self.cri.ids.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn connect(rt: &tokio::runtime::Runtime, d: &Berthd, ids: Arc<Mutex<Vec<String>>>) -> Cri {
    let channel = rt.block_on(d.channel());
    Cri {
        runtime: RuntimeServiceClient::new(channel.clone()),
        images: ImageServiceClient::new(channel),
        ids,
    }
}

fn berthd_config(sandbox_image: &str, net_d: &Path) -> String {
    format!(
        "[cri]\nsandbox_image = {}\n[cri.cni]\nconf_dir = {}\nbin_dirs = [\"/usr/lib/cni\"]\n",
        toml_str(sandbox_image),
        toml_str(&net_d.to_string_lossy())
    )
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// pause, busybox and httpd of the offline layout as `<registry>/<name>:latest`.
fn push_test_images(registry: &Registry) {
    let layout = test_images().join("oci");
    for name in ["pause", "busybox", "httpd"] {
        let out = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{name}:latest", registry.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// (mount point, fstype) of every mount of this process's mount namespace.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            Some((
                PathBuf::from(point.replace("\\040", " ")),
                fstype.to_string(),
            ))
        })
        .collect()
}

/// Directories named `name` anywhere below `root` (not following symlinks).
fn dirs_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name() == name {
                    out.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// `/sys/fs/cgroup/<hierarchy>/<root>` for every hierarchy where it exists.
fn cgroup_roots(root: &str) -> Vec<PathBuf> {
    subdirs(Path::new("/sys/fs/cgroup"))
        .into_iter()
        .map(|h| h.join(root))
        .filter(|p| p.is_dir())
        .collect()
}

/// Every `-A` rule of every table, prefixed with its table: `nat -A CHAIN ...`.
fn iptables_rules() -> HashSet<String> {
    let mut table = String::new();
    let mut out = HashSet::new();
    for line in cmd_out("iptables-save", &[]).lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if line.starts_with("-A ") {
            out.insert(format!("{table} {line}"));
        }
    }
    out
}

/// Applies one iptables-restore command (`-D ...`, `-F X`, `-X X`) to `table` without flushing.
fn iptables_apply(table: &str, command: &str) {
    let child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = write!(stdin, "*{table}\n{command}\nCOMMIT\n");
        }
        let _ = child.wait();
    }
}

/// Polls `cond` every 100 ms until it holds; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET of `/`: (status code, body).
pub fn http_get(host: &str, port: u16) -> std::io::Result<(u16, String)> {
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// `http_get`, retried for up to 10 s while the server comes up; panics with the last error.
pub fn http_get_eventually(host: &str, port: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(host, port) {
            Ok(r) => return r,
            Err(e) if Instant::now() >= deadline => panic!("GET http://{host}:{port}/: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The page the test image's httpd serves.
pub const HTTPD_PAGE: &str = "<html><body>hello from busybox httpd</body></html>\n";

/// One line of a CRI log file: `<RFC3339Nano timestamp> <stream> <P|F> <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    pub partial: bool,
    pub content: String,
    /// The line as it is in the file (without the newline).
    pub raw: String,
}

/// Parses a CRI log file; a line not in the CRI format comes back with an empty `stream` (so an
/// assertion on the streams shows it).
pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|l| {
            parse_log_line(l).unwrap_or_else(|| LogLine {
                timestamp: String::new(),
                stream: String::new(),
                partial: false,
                content: String::new(),
                raw: l.to_string(),
            })
        })
        .collect()
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$`
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let ts = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next()?;
    if !is_rfc3339_nano(ts) || !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    let partial = match tag {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(LogLine {
        timestamp: ts.to_string(),
        stream: stream.to_string(),
        partial,
        content: content.to_string(),
        raw: line.to_string(),
    })
}

fn is_rfc3339_nano(ts: &str) -> bool {
    // Pattern by character class: d = digit, literal otherwise.
    const HEAD: &[u8] = b"dddd-dd-ddTdd:dd:dd.";
    let b = ts.as_bytes();
    if b.len() <= HEAD.len() {
        return false;
    }
    let class_ok = |p: &[u8], s: &[u8]| {
        p.len() == s.len()
            && p.iter().zip(s).all(|(p, c)| match p {
                b'd' => c.is_ascii_digit(),
                lit => lit == c,
            })
    };
    if !class_ok(HEAD, &b[..HEAD.len()]) {
        return false;
    }
    let rest = &b[HEAD.len()..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    match &rest[digits..] {
        b"Z" => true,
        zone => {
            zone.len() == 6
                && (zone[0] == b'+' || zone[0] == b'-')
                && class_ok(b"dd:dd", &zone[1..])
        }
    }
}

/// The content of one stream, lines joined as the program wrote them (P parts glued, F ends a line).
pub fn stream_text(lines: &[LogLine], stream: &str) -> String {
    let mut out = String::new();
    for l in lines.iter().filter(|l| l.stream == stream) {
        out.push_str(&l.content);
        if !l.partial {
            out.push('\n');
        }
    }
    out
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        let ids = self.tracked_ids();
        let needles = self.needles();
        // berthd first: it kills its shims (and with them the containers) and unmounts its dirs.
        let berthd_dir = self.d.as_ref().map(|d| d.dir.path().to_path_buf());
        drop(self.d.take());
        // runc state of this test's own containers, if the daemon's guard did not find them.
        for id in &ids {
            let _ = Command::new("runc")
                .args([
                    "--root",
                    "/run/containerd/runc/k8s.io",
                    "delete",
                    "--force",
                    id,
                ])
                .output();
        }
        if let Some(dir) = berthd_dir {
            crate::daemon::unmount_all_under(&dir);
        }
        crate::daemon::unmount_all_under(self.dir.path());

        for veth in self.veths() {
            let _ = Command::new("ip").args(["link", "del", &veth]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();

        // iptables: rules added since the start that mention this test's network or ids, then
        // the per-pod chains those rules jumped to.
        let mut chains = Vec::new();
        for rule in iptables_rules() {
            if self.iptables_before.contains(&rule) || !needles.iter().any(|n| rule.contains(n)) {
                continue;
            }
            let Some((table, line)) = rule.split_once(' ') else {
                continue;
            };
            if let Some(target) = line.split(" -j ").nth(1).and_then(|t| t.split(' ').next()) {
                if target.starts_with("CNI-") && !target.starts_with("CNI-HOSTPORT-") {
                    chains.push((table.to_string(), target.to_string()));
                }
            }
            iptables_apply(table, &format!("-D{}", &line[2..]));
        }
        for (table, chain) in chains {
            iptables_apply(&table, &format!("-F {chain}"));
            iptables_apply(&table, &format!("-X {chain}"));
        }

        // cgroups under this test's parent, deepest first; the killed tasks may take a moment
        // to leave them.
        let deadline = Instant::now() + Duration::from_secs(5);
        for root in cgroup_roots(&self.cgroup_root) {
            let mut all = vec![root.clone()];
            let mut i = 0;
            while i < all.len() {
                let children = subdirs(&all[i]);
                all.extend(children);
                i += 1;
            }
            for dir in all.iter().rev() {
                while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_and_reject() {
        let l = parse_log_line("2024-05-01T10:11:12.123456789Z stdout F hello").expect("parses");
        assert_eq!(
            (l.stream.as_str(), l.partial, l.content.as_str()),
            ("stdout", false, "hello")
        );
        let l = parse_log_line("2024-05-01T10:11:12.1+02:00 stderr P a b ").expect("parses");
        assert_eq!(
            (l.stream.as_str(), l.partial, l.content.as_str()),
            ("stderr", true, "a b ")
        );
        assert!(parse_log_line("2024-05-01T10:11:12.1+02:00 stderr F ").is_some());
        for bad in [
            "2024-05-01T10:11:12Z stdout F no-fraction",
            "2024-05-01 10:11:12.1Z stdout F space",
            "2024-05-01T10:11:12.1 stdout F no-zone",
            "2024-05-01T10:11:12.1+0200 stdout F zone",
            "2024-05-01T10:11:12.1Z stdin F x",
            "2024-05-01T10:11:12.1Z stdout X x",
            "2024-05-01T10:11:12.1Z stdout F",
            "hello",
        ] {
            assert!(parse_log_line(bad).is_none(), "accepted {bad}");
        }
    }

    #[test]
    fn stream_text_glues_partials() {
        let lines = parse_log(
            "2024-05-01T10:11:12.1Z stdout P ab\n2024-05-01T10:11:12.2Z stderr F e\n2024-05-01T10:11:12.3Z stdout F cd\n",
        );
        assert_eq!(stream_text(&lines, "stdout"), "abcd\n");
        assert_eq!(stream_text(&lines, "stderr"), "e\n");
    }
}
