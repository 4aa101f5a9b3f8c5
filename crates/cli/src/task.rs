//! `berth task ...`: ls, kill, exec, ps, metrics, pause, resume, rm.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::{
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListPidsRequest, ListTasksRequest, MetricsRequest, PauseTaskRequest,
    ResumeTaskRequest, WaitRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use prost::Message;
use serde::Serialize;

use crate::attach::start_and_wait;
use crate::conn::Conn;
use crate::metrics;
use crate::output::{self, Format};
use crate::run::exit_code;
use crate::stdio::{Attached, RawTerminal};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

pub fn status_name(s: i32) -> &'static str {
    match TaskStatus::try_from(s) {
        Ok(TaskStatus::Created) => "CREATED",
        Ok(TaskStatus::Running) => "RUNNING",
        Ok(TaskStatus::Stopped) => "STOPPED",
        Ok(TaskStatus::Paused) => "PAUSED",
        Ok(TaskStatus::Pausing) => "PAUSING",
        _ => "UNKNOWN",
    }
}

#[derive(Serialize)]
struct TaskRow {
    task: String,
    pid: u32,
    status: String,
}

pub async fn ls(conn: &Conn, format: Format) -> Result<()> {
    let tasks = conn
        .tasks()
        .list(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    let mut rows: Vec<TaskRow> = tasks
        .into_iter()
        .map(|t| TaskRow {
            task: t.id,
            pid: t.pid,
            status: status_name(t.status).into(),
        })
        .collect();
    rows.sort_by(|a, b| a.task.cmp(&b.task));
    output::print(format, &["TASK", "PID", "STATUS"], &rows, |r| {
        vec![r.task.clone(), r.pid.to_string(), r.status.clone()]
    })
}

/// `SIGKILL`, `KILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal {s:?}");
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    let sig =
        nix::sys::signal::Signal::from_str(&name).map_err(|_| anyhow!("invalid signal {s:?}"))?;
    Ok(sig as i32 as u32)
}

pub async fn kill(conn: &Conn, id: String, signal: &str, all: bool, exec_id: String) -> Result<()> {
    let signal = parse_signal(signal)?;
    conn.tasks()
        .kill(KillRequest {
            container_id: id,
            exec_id,
            signal,
            all,
        })
        .await?;
    Ok(())
}

pub async fn pause(conn: &Conn, id: String) -> Result<()> {
    conn.tasks()
        .pause(PauseTaskRequest { container_id: id })
        .await?;
    Ok(())
}

pub async fn resume(conn: &Conn, id: String) -> Result<()> {
    conn.tasks()
        .resume(ResumeTaskRequest { container_id: id })
        .await?;
    Ok(())
}

/// Deletes a task; `force` kills a live one (SIGKILL) and waits for it first, as `ctr task rm -f`.
pub async fn rm(conn: &Conn, id: String, force: bool) -> Result<()> {
    let task = conn
        .tasks()
        .get(GetRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        })
        .await?
        .into_inner()
        .process
        .ok_or_else(|| anyhow!("task {id} not found"))?;
    let status = TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unknown);
    if !matches!(status, TaskStatus::Stopped | TaskStatus::Created) {
        if !force {
            bail!(
                "task {id} must be stopped before deletion: {}",
                status_name(task.status)
            );
        }
        let mut tasks = conn.tasks();
        let req = WaitRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        };
        let waiter = tokio::spawn(async move { tasks.wait(req).await });
        conn.tasks()
            .kill(KillRequest {
                container_id: id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            })
            .await?;
        waiter.await.map_err(|e| anyhow!("wait: {e}"))??;
    }
    let r = conn
        .tasks()
        .delete(DeleteTaskRequest {
            container_id: id.clone(),
        })
        .await?
        .into_inner();
    println!("{id} {}", r.exit_status);
    Ok(())
}

/// Minimal runc `ProcessDetails` (ps info): which exec a pid belongs to.
#[derive(Clone, PartialEq, prost::Message)]
struct ProcessDetails {
    #[prost(string, tag = "1")]
    exec_id: String,
}

#[derive(Serialize)]
struct PsRow {
    pid: u32,
    info: String,
}

pub async fn ps(conn: &Conn, id: String, format: Format) -> Result<()> {
    let procs = conn
        .tasks()
        .list_pids(ListPidsRequest { container_id: id })
        .await?
        .into_inner()
        .processes;
    let rows: Vec<PsRow> = procs
        .into_iter()
        .map(|p| PsRow {
            pid: p.pid,
            info: p
                .info
                .as_ref()
                .and_then(|a| ProcessDetails::decode(a.value.as_slice()).ok())
                .map(|d| d.exec_id)
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "-".into()),
        })
        .collect();
    output::print(format, &["PID", "INFO"], &rows, |r| {
        vec![r.pid.to_string(), r.info.clone()]
    })
}

pub async fn metrics(conn: &Conn, id: String, format: Format) -> Result<()> {
    let resp = conn
        .tasks()
        .metrics(MetricsRequest {
            filters: vec![format!("id=={id}")],
        })
        .await?
        .into_inner();
    let m = resp
        .metrics
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| anyhow!("no metrics for task {id}"))?;
    let data = m
        .data
        .ok_or_else(|| anyhow!("task {id} returned empty metrics"))?;
    let values = metrics::decode(&data)?;
    match format {
        Format::Json => {
            let obj: serde_json::Map<String, serde_json::Value> = values.into_iter().collect();
            let out = serde_json::json!({
                "id": id,
                "timestamp": output::rfc3339(m.timestamp.as_ref()),
                "type": data.type_url,
                "metrics": obj,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            println!("ID    TIMESTAMP");
            println!("{id}    {}", output::rfc3339(m.timestamp.as_ref()));
            println!();
            let rows: Vec<(String, String)> = values
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
            output::print(Format::Table, &["METRIC", "VALUE"], &rows, |r| {
                vec![r.0.clone(), r.1.clone()]
            })?;
        }
    }
    Ok(())
}

pub struct ExecArgs {
    pub id: String,
    pub exec_id: Option<String>,
    pub tty: bool,
    pub detach: bool,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub args: Vec<String>,
}

/// Runs `args` in the task's container with the container's process spec (user, env, caps),
/// returning the exec's exit code.
pub async fn exec(conn: &Conn, a: ExecArgs) -> Result<u8> {
    let container = conn
        .containers()
        .get(GetContainerRequest { id: a.id.clone() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| anyhow!("container {} not found", a.id))?;
    let spec = container
        .spec
        .ok_or_else(|| anyhow!("container {} has no spec", a.id))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&spec.value).context("container spec is not JSON")?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| anyhow!("container {} spec has no process", a.id))?;
    process["args"] = serde_json::json!(a.args);
    process["terminal"] = serde_json::json!(a.tty);
    if let Some(cwd) = &a.cwd {
        process["cwd"] = serde_json::json!(cwd);
    }
    if !a.env.is_empty() {
        let cur: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap_or_default();
        process["env"] = serde_json::json!(berth_spec::replace_or_append_env(&cur, &a.env));
    }
    let exec_id = a.exec_id.clone().unwrap_or_else(|| {
        format!(
            "exec-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        )
    });
    let mut io = if a.detach {
        None
    } else {
        Some(Attached::new(a.tty)?)
    };
    let paths = io.as_ref().map(|i| i.paths.clone()).unwrap_or_default();
    conn.tasks()
        .exec(ExecProcessRequest {
            container_id: a.id.clone(),
            stdin: paths.stdin,
            stdout: paths.stdout,
            stderr: paths.stderr,
            terminal: a.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.into(),
                value: serde_json::to_vec(&process)?,
            }),
            exec_id: exec_id.clone(),
        })
        .await?;
    let raw = if a.tty && !a.detach {
        RawTerminal::enable()
    } else {
        None
    };
    let res = start_and_wait(conn, &a.id, &exec_id, io.as_mut()).await;
    drop(raw);
    let status = match res {
        Ok(s) => s,
        Err(e) => {
            let _ = delete_exec(conn, &a.id, &exec_id).await;
            return Err(e);
        }
    };
    let Some(code) = status else {
        return Ok(0);
    };
    delete_exec(conn, &a.id, &exec_id).await?;
    Ok(exit_code(code))
}

async fn delete_exec(conn: &Conn, id: &str, exec_id: &str) -> Result<()> {
    conn.tasks()
        .delete_process(DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGKILL").expect("kill"), 9);
        assert_eq!(parse_signal("kill").expect("kill"), 9);
        assert_eq!(parse_signal("TERM").expect("term"), 15);
        assert_eq!(parse_signal("10").expect("num"), 10);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("").is_err());
    }
}
