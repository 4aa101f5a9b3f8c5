//! Conversions between the boundary's prost types and containerd-shim-protos' rust-protobuf types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::{any, timestamp};
use containerd_shim_protos::protobuf::MessageField;

use crate::types::{Mount, ProcessState, Status};

pub(crate) fn any_to_pb(a: &prost_types::Any) -> any::Any {
    any::Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
        ..Default::default()
    }
}

pub(crate) fn any_from_pb(a: &any::Any) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

pub(crate) fn opt_any_to_pb(a: Option<&prost_types::Any>) -> MessageField<any::Any> {
    MessageField::from_option(a.map(any_to_pb))
}

pub(crate) fn time_from_pb(ts: &MessageField<timestamp::Timestamp>) -> Option<SystemTime> {
    let ts = ts.as_ref()?;
    if ts.seconds <= 0 && ts.nanos <= 0 {
        return None;
    }
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

pub(crate) fn time_to_pb(t: SystemTime) -> timestamp::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    timestamp::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

pub(crate) fn mount_to_pb(m: &Mount) -> api::Mount {
    api::Mount {
        type_: m.r#type.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
        ..Default::default()
    }
}

pub(crate) fn status_from_pb(s: api::Status) -> Status {
    match s {
        api::Status::CREATED => Status::Created,
        api::Status::RUNNING => Status::Running,
        api::Status::STOPPED => Status::Stopped,
        api::Status::PAUSED => Status::Paused,
        api::Status::PAUSING => Status::Pausing,
        _ => Status::Unknown,
    }
}

pub(crate) fn state_from_pb(id: &str, exec_id: &str, r: &api::StateResponse) -> ProcessState {
    ProcessState {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        pid: r.pid,
        status: status_from_pb(r.status.enum_value_or(api::Status::UNKNOWN)),
        stdin: r.stdin.clone(),
        stdout: r.stdout.clone(),
        stderr: r.stderr.clone(),
        terminal: r.terminal,
        exit_status: r.exit_status,
        exited_at: time_from_pb(&r.exited_at),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(time_from_pb(&MessageField::some(time_to_pb(t))), Some(t));
        assert_eq!(time_from_pb(&MessageField::none()), None);
    }

    #[test]
    fn any_round_trips() {
        let a = prost_types::Any {
            type_url: "x.y".into(),
            value: vec![1, 2],
        };
        assert_eq!(any_from_pb(&any_to_pb(&a)), a);
    }
}
