//! containerd's Tasks service over berth's task manager (shim v2).

use std::time::SystemTime;

use berth_api::server::tasks::tasks_server::Tasks;
use berth_api::services::v1::*;
use berth_api::types::v1::{Process, ProcessInfo, Status as PStatus};
use berth_api::types::Metric;
use berth_runtime as rt;
use tonic::{Request, Response, Status};

use super::Service;
use crate::context;
use crate::convert::{blob_to_any, ts};
use crate::daemon::{backend_key, blocking};
use crate::status::IntoStatus;

fn process_to_pb(p: rt::ProcessState) -> Process {
    let status = match p.status {
        rt::Status::Created => PStatus::Created,
        rt::Status::Running => PStatus::Running,
        rt::Status::Stopped => PStatus::Stopped,
        rt::Status::Paused => PStatus::Paused,
        rt::Status::Pausing => PStatus::Pausing,
        rt::Status::Unknown => PStatus::Unknown,
    };
    // containerd names the init process by its container id and an exec by its exec id.
    let id = if p.exec_id.is_empty() {
        p.id.clone()
    } else {
        p.exec_id
    };
    Process {
        container_id: p.id,
        id,
        pid: p.pid,
        status: status as i32,
        stdin: p.stdin,
        stdout: p.stdout,
        stderr: p.stderr,
        terminal: p.terminal,
        exit_status: p.exit_status,
        exited_at: p.exited_at.and_then(ts),
    }
}

fn exit_time(t: SystemTime) -> Option<prost_types::Timestamp> {
    ts(t)
}

impl Service {
    /// containerd refuses to drop a container record while its task exists.
    pub async fn refuse_if_task_exists(&self, ns: &str, id: &str) -> Result<(), Status> {
        match self.tasks.state(ns, id, "").await {
            Ok(_) => Err(Status::failed_precondition(format!(
                "container {id:?} has a task: delete the task first"
            ))),
            Err(e) if e.kind() == rt::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::status::from_runtime(e)),
        }
    }
}

#[tonic::async_trait]
impl Tasks for Service {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        if req.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring a task from a checkpoint is not supported by berth",
            ));
        }
        let s = self.clone();
        let (ns2, id) = (ns.clone(), req.container_id.clone());
        let container = blocking(move || s.store.container_get(&ns2, &id).status()).await?;
        let spec = container
            .spec
            .ok_or_else(|| {
                Status::failed_precondition(format!("container {:?} has no spec", container.id))
            })?
            .value;
        // Refuse garbage here, with a clear code, rather than as a runtime failure inside the shim.
        match serde_json::from_slice::<serde_json::Value>(&spec) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "container spec must be a JSON object (OCI runtime spec)",
                ))
            }
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "container spec is not valid JSON: {e}"
                )))
            }
        }
        let mut rootfs: Vec<_> = req
            .rootfs
            .into_iter()
            .map(crate::convert::mount_from_pb)
            .collect();
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            // A client that did not pass mounts gets the container's own snapshot, as with containerd.
            let sn = self.snapshotter(&container.snapshotter)?;
            let key = backend_key(&ns, &container.snapshot_key);
            rootfs = blocking(move || sn.mounts(&key).status()).await?;
        }
        let runtime = if req.runtime_path.is_empty() {
            container.runtime.name.clone()
        } else {
            req.runtime_path.clone()
        };
        let create = rt::CreateTask {
            id: container.id.clone(),
            spec,
            runtime,
            runtime_options: req.options.or(container.runtime.options.map(blob_to_any)),
            rootfs: crate::convert::to_runtime_mounts(rootfs),
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
            checkpoint: None,
        };
        let pid = self.tasks.create(&ns, create).await.status()?;
        Ok(Response::new(CreateTaskResponse {
            container_id: container.id,
            pid,
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let pid = self
            .tasks
            .start(&ns, &req.container_id, &req.exec_id)
            .await
            .status()?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = context::namespace(&req)?;
        let id = req.into_inner().container_id;
        let exit = self.tasks.delete(&ns, &id).await.status()?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit_time(exit.exited_at),
        }))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        if req.exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec_id is required: delete the task itself with Delete",
            ));
        }
        let exit = self
            .tasks
            .delete_process(&ns, &req.container_id, &req.exec_id)
            .await
            .status()?;
        Ok(Response::new(DeleteResponse {
            id: req.exec_id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit_time(exit.exited_at),
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let p = self
            .tasks
            .state(&ns, &req.container_id, &req.exec_id)
            .await
            .status()?;
        Ok(Response::new(GetResponse {
            process: Some(process_to_pb(p)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = context::namespace(&req)?;
        let tasks = self.tasks.list(&ns).await.status()?;
        Ok(Response::new(ListTasksResponse {
            tasks: tasks.into_iter().map(process_to_pb).collect(),
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        self.tasks
            .kill(&ns, &req.container_id, &req.exec_id, req.signal, req.all)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        berth_store::identifiers::validate(&req.exec_id)
            .map_err(|e| Status::invalid_argument(format!("exec id: {e}")))?;
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("exec needs a process spec"))?;
        self.tasks
            .exec(
                &ns,
                &req.container_id,
                rt::ExecProcess {
                    exec_id: req.exec_id,
                    spec,
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                },
            )
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        self.tasks
            .resize_pty(&ns, &req.container_id, &req.exec_id, req.width, req.height)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        self.tasks
            .close_io(&ns, &req.container_id, &req.exec_id, req.stdin)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        self.tasks
            .pause(&ns, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        self.tasks
            .resume(&ns, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = context::namespace(&req)?;
        let pids = self
            .tasks
            .pids(&ns, &req.into_inner().container_id)
            .await
            .status()?;
        Ok(Response::new(ListPidsResponse {
            processes: pids
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    info: p.info,
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpointing tasks is not supported by berth",
        ))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        self.tasks
            .update(&ns, &req.container_id, req.resources, req.annotations)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let filter = berth_store::filters::parse(&req.get_ref().filters).status()?;
        let ns = context::namespace(&req)?;
        let mut metrics = Vec::new();
        for task in self.tasks.list(&ns).await.status()? {
            if !filter.matches(&TaskFields(&task.id)) {
                continue;
            }
            match self.tasks.stats(&ns, &task.id).await {
                Ok(data) => metrics.push(Metric {
                    timestamp: ts(SystemTime::now()),
                    id: task.id.clone(),
                    data,
                }),
                // A task that went away between the list and its stats is not an error.
                Err(e) if e.kind() == rt::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::status::from_runtime(e)),
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = context::namespace(&req)?;
        let req = req.into_inner();
        let exit = self
            .tasks
            .wait(&ns, &req.container_id, &req.exec_id)
            .await
            .status()?;
        Ok(Response::new(WaitResponse {
            exit_status: exit.status,
            exited_at: exit_time(exit.exited_at),
        }))
    }
}

/// Metrics filters select tasks by container id (`id==web`).
struct TaskFields<'a>(&'a str);

impl berth_store::filters::Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("id") => Some(self.0.to_string()),
            _ => None,
        }
    }
}
