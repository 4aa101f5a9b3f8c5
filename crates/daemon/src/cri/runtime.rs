use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::services::Service;

/// The CRI API version berth speaks.
const API_VERSION: &str = "v1";

#[tonic::async_trait]
impl RuntimeService for Service {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: crate::services::version::VERSION.into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let condition = |kind: &str, ok: bool, reason: &str, message: &str| RuntimeCondition {
            r#type: kind.into(),
            status: ok,
            reason: reason.into(),
            message: message.into(),
        };
        let network = match self.cri.cni.status() {
            Ok(()) => condition("NetworkReady", true, "", ""),
            Err(e) => condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                &format!("cni: {e}"),
            ),
        };
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            let handlers: Vec<_> = self
                .cri
                .handlers
                .summary()
                .into_iter()
                .map(|(name, ok)| serde_json::json!({"name": name, "available": ok}))
                .collect();
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "sandboxImage": self.cri.config.sandbox_image,
                    "defaultRuntime": self.cri.config.default_runtime,
                    "runtimeHandlers": handlers,
                    "cni": {
                        "confDir": self.cri.config.cni.conf_dir,
                        "binDirs": self.cri.config.cni.bin_dirs,
                    },
                    "podCIDR": *self.cri.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()),
                })
                .to_string(),
            );
        }
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![condition("RuntimeReady", true, "", ""), network],
            }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        // Kept and reported; berth's CNI configs carry their own ranges (no config templating).
        if let Some(cidr) = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
        {
            *self.cri.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()) = cidr;
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(Status::unimplemented(
            "CRI GetContainerEvents (evented PLEG) is not implemented in berth: the kubelet \
             falls back to relisting",
        ))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let pod_sandbox_id = self.cri_run_pod(req.into_inner()).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }
    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        self.cri_stop_pod(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }
    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        self.cri_remove_pod(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }
    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        let meta = self.cri_pod(&req.pod_sandbox_id)?;
        Ok(Response::new(self.pod_status(&meta, req.verbose)))
    }
    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(ListPodSandboxResponse {
            items: self.list_pods(req.into_inner().filter),
        }))
    }
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let container_id = self.cri_create_container(req.into_inner()).await?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        self.cri_start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(StartContainerResponse {}))
    }
    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = req.into_inner();
        self.cri_stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(StopContainerResponse {}))
    }
    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        self.cri_remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }
    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(ListContainersResponse {
            containers: self.list_containers(req.into_inner().filter),
        }))
    }
    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let meta = self.cri_container(&req.container_id)?;
        Ok(Response::new(self.container_status(&meta, req.verbose)))
    }
    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.cri_update_resources(&req.container_id, req.linux)
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }
    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.cri_reopen_log(&req.into_inner().container_id).await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }
    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        Ok(Response::new(self.cri_exec_sync(req.into_inner()).await?))
    }
    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = req.into_inner();
        let meta = self.cri_container(&req.container_id)?;
        running(&meta)?;
        let url = self
            .stream_server()?
            .exec_url(berth_stream::ExecRequest {
                container_id: meta.id,
                cmd: req.cmd,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .map_err(stream_status)?;
        Ok(Response::new(ExecResponse { url }))
    }
    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let req = req.into_inner();
        let meta = self.cri_container(&req.container_id)?;
        running(&meta)?;
        if req.stdin && !meta.config.stdin {
            return Err(Status::invalid_argument(format!(
                "container {} was not created with stdin: attach cannot send it any",
                meta.id
            )));
        }
        let url = self
            .stream_server()?
            .attach_url(berth_stream::AttachRequest {
                container_id: meta.id,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .map_err(stream_status)?;
        Ok(Response::new(AttachResponse { url }))
    }
    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let req = req.into_inner();
        let meta = self.cri_pod(&req.pod_sandbox_id)?;
        if meta.state != super::meta::SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                meta.id
            )));
        }
        let mut ports = Vec::new();
        for p in req.port {
            ports.push(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                Status::invalid_argument(format!("port {p} cannot be forwarded"))
            })?);
        }
        let url = self
            .stream_server()?
            .port_forward_url(berth_stream::PortForwardRequest {
                pod_sandbox_id: meta.id,
                ports,
            })
            .map_err(stream_status)?;
        Ok(Response::new(PortForwardResponse { url }))
    }
    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let meta = self.cri_container(&id)?;
        let (stats, _) = self.cri_container_stats(&meta).await;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }
    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let list: Vec<_> = self
            .cri
            .records
            .containers()
            .into_iter()
            .filter(|m| f.id.is_empty() || m.id.starts_with(&f.id))
            .filter(|m| f.pod_sandbox_id.is_empty() || m.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|m| super::sandbox::labels_match(&m.config.labels, &f.label_selector))
            .collect();
        Ok(Response::new(ListContainerStatsResponse {
            stats: self.cri_list_container_stats(list).await,
        }))
    }
    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let meta = self.cri_pod(&id)?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(self.cri_pod_stats(&meta).await?),
        }))
    }
    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for m in self.cri.records.sandboxes() {
            if (f.id.is_empty() || m.id.starts_with(&f.id))
                && super::sandbox::labels_match(&m.config.labels, &f.label_selector)
            {
                stats.push(self.cri_pod_stats(&m).await?);
            }
        }
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }
    async fn checkpoint_container(
        &self,
        _req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "CRI checkpoint_container is not implemented in berth",
        ))
    }
    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Err(Status::unimplemented(
            "CRI list_metric_descriptors is not implemented in berth",
        ))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Err(Status::unimplemented(
            "CRI list_pod_sandbox_metrics is not implemented in berth",
        ))
    }
}

fn running(meta: &super::meta::ContainerMeta) -> Result<(), Status> {
    if meta.state != super::meta::ContainerState::Running {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            meta.id
        )));
    }
    Ok(())
}

fn stream_status(e: berth_stream::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

impl Service {
    fn stream_server(&self) -> Result<&berth_stream::Server, Status> {
        self.cri
            .stream
            .get()
            .ok_or_else(|| Status::unavailable("the CRI streaming server is not running"))
    }
}
