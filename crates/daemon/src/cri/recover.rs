//! After a restart: CRI records come back from the store, running containers get their log
//! copiers and exit watchers again, and exits that happened while berthd was down are recorded.

use super::io::Fifos;
use super::meta::{from_record, ContainerState, Loaded, SandboxState};
use super::NAMESPACE;
use crate::services::Service;

impl Service {
    pub async fn cri_recover(&self) {
        let records = match self.cri_stored_records().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "no CRI records to recover");
                return;
            }
        };
        let mut containers = Vec::new();
        for rec in &records {
            match from_record(rec) {
                None => {}
                Some(Err(e)) => tracing::warn!(id = %rec.id, error = %e, "unreadable CRI record"),
                Some(Ok(Loaded::Sandbox(s))) => {
                    let running = self.task_running(&s.id).await;
                    let id = s.id.clone();
                    let was_ready = s.state == SandboxState::Ready;
                    self.cri.records.put_sandbox(s);
                    if running {
                        self.watch_sandbox(&id);
                        self.check_pod_network(&id).await;
                    } else if was_ready {
                        if let Some(m) = self
                            .cri
                            .records
                            .update_sandbox(&id, |m| m.state = SandboxState::NotReady)
                        {
                            let _ = self.cri_save_meta(&id, m.to_blob()).await;
                        }
                    }
                }
                Some(Ok(Loaded::Container(c))) => containers.push(c),
            }
        }
        for c in containers {
            let id = c.id.clone();
            let state = c.state;
            self.cri.records.put_container(c.clone());
            if state != ContainerState::Running {
                continue;
            }
            match self.tasks.state(NAMESPACE, &id, "").await {
                Ok(st)
                    if st.status == berth_runtime::Status::Running
                        || st.status == berth_runtime::Status::Paused =>
                {
                    let mut fifos = Fifos::at(self.cri.io_dir(&id), c.config.tty);
                    if c.config.stdin {
                        fifos = fifos.with_stdin();
                    }
                    // The running process already holds its ends: no keep-alive needed.
                    if let Err(e) = self.attach_log(&c, &fifos).await.map(drop) {
                        tracing::warn!(id = %id, error = %e, "reattach container log");
                    }
                    self.watch_container(&id);
                }
                Ok(st) => {
                    let at = st.exited_at.unwrap_or_else(std::time::SystemTime::now);
                    self.record_exit(&id, st.exit_status as i32, at).await;
                    Fifos::at(self.cri.io_dir(&id), c.config.tty).remove();
                }
                Err(_) => {
                    // No task at all: its exit is unknown.
                    if let Some(m) = self.cri.records.update_container(&id, |m| {
                        m.state = ContainerState::Exited;
                        m.exit_code = 255;
                        m.finished_at = super::meta::now_nanos();
                        m.reason = "Unknown".into();
                        m.message = "the container's task was gone after a berthd restart".into();
                    }) {
                        let _ = self.cri_save_meta(&id, m.to_blob()).await;
                    }
                }
            }
        }
        tracing::info!(
            pods = self.cri.records.sandboxes().len(),
            containers = self.cri.records.containers().len(),
            "CRI state recovered"
        );
    }

    /// CNI CHECK of a pod found running (where the config's version has CHECK): a network that
    /// drifted while berthd was down is reported, not repaired (the kubelet decides).
    async fn check_pod_network(&self, id: &str) {
        let Some(meta) = self.cri.records.sandbox(id) else {
            return;
        };
        if meta.netns.is_none() {
            return;
        }
        if let Ok(net) = self.pod_network(&meta) {
            if let Err(e) = self.cri.cni.check(&net).await {
                tracing::warn!(pod = %meta.name, id = %id, error = %e, "CNI CHECK after restart");
            }
        }
    }

    async fn task_running(&self, id: &str) -> bool {
        matches!(
            self.tasks.state(NAMESPACE, id, "").await,
            Ok(st) if st.status == berth_runtime::Status::Running
                || st.status == berth_runtime::Status::Paused
        )
    }
}
