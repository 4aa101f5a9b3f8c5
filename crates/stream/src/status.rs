//! How the end of a remote command is reported on the error stream.

use serde_json::json;

pub(crate) enum Outcome {
    Exited(i32),
    Detached,
    Failed(String),
}

/// `v4.channel.k8s.io` and later: a metav1.Status, always sent.
pub(crate) fn v4_status(outcome: &Outcome) -> Vec<u8> {
    let value = match outcome {
        Outcome::Exited(0) | Outcome::Detached => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    value.to_string().into_bytes()
}

/// Older protocols: plain text, and only when something went wrong.
pub(crate) fn text_status(outcome: &Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Exited(0) | Outcome::Detached => None,
        Outcome::Exited(code) => {
            Some(format!("command terminated with non-zero exit code: {code}").into_bytes())
        }
        Outcome::Failed(msg) => Some(msg.clone().into_bytes()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_travels_in_causes() {
        let v: serde_json::Value = serde_json::from_slice(&v4_status(&Outcome::Exited(7))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "7");
        let ok: serde_json::Value =
            serde_json::from_slice(&v4_status(&Outcome::Exited(0))).unwrap();
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        assert!(text_status(&Outcome::Exited(0)).is_none());
    }
}
