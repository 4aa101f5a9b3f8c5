//! Transport-independent part of exec and attach: which streams a session has, running the
//! backend, and decoding resize messages.

use serde::Deserialize;

use crate::backend::{Backend, Io};
use crate::status::Outcome;
use crate::types::{AttachRequest, ExecRequest, TermSize};

#[derive(Debug, Clone)]
pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Command {
    pub(crate) fn stdin(&self) -> bool {
        match self {
            Command::Exec(r) => r.stdin,
            Command::Attach(r) => r.stdin,
        }
    }
    pub(crate) fn stdout(&self) -> bool {
        match self {
            Command::Exec(r) => r.stdout,
            Command::Attach(r) => r.stdout,
        }
    }
    pub(crate) fn stderr(&self) -> bool {
        match self {
            Command::Exec(r) => r.stderr,
            Command::Attach(r) => r.stderr,
        }
    }
    pub(crate) fn tty(&self) -> bool {
        match self {
            Command::Exec(r) => r.tty,
            Command::Attach(r) => r.tty,
        }
    }

    pub(crate) async fn run(&self, backend: &dyn Backend, io: Io) -> Outcome {
        match self {
            Command::Exec(r) => match backend.exec(r, io).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(format!(
                    "error executing command {:?} in container {}: {e}",
                    r.cmd, r.container_id
                )),
            },
            Command::Attach(r) => match backend.attach(r, io).await {
                Ok(()) => Outcome::Detached,
                Err(e) => Outcome::Failed(format!(
                    "error attaching to container {}: {e}",
                    r.container_id
                )),
            },
        }
    }
}

/// Go's JSON decoder matches field names case-insensitively; clients send `Width`/`Height`.
#[derive(Deserialize)]
struct WireSize {
    #[serde(alias = "width", alias = "WIDTH")]
    #[serde(rename = "Width")]
    width: u16,
    #[serde(alias = "height", alias = "HEIGHT")]
    #[serde(rename = "Height")]
    height: u16,
}

/// Decodes the complete JSON objects at the front of `buf`, leaving a partial one behind.
/// Bytes that can never become a size are dropped and reported.
pub(crate) fn drain_sizes(buf: &mut Vec<u8>) -> Result<Vec<TermSize>, String> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<WireSize>();
    let mut failure = None;
    for item in stream.by_ref() {
        match item {
            Ok(s) => sizes.push(TermSize {
                width: s.width,
                height: s.height,
            }),
            Err(e) if e.is_eof() => break,
            Err(e) => {
                failure = Some(format!("bad terminal size message: {e}"));
                break;
            }
        }
    }
    let consumed = stream.byte_offset();
    match failure {
        Some(msg) => {
            buf.clear();
            Err(msg)
        }
        None => {
            buf.drain(..consumed);
            Ok(sizes)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_split_across_messages() {
        let mut buf = br#"{"Width":80,"Height":24}{"width":1"#.to_vec();
        let got = drain_sizes(&mut buf).unwrap();
        assert_eq!(
            got,
            vec![TermSize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(br#"00,"height":50}"#);
        let got = drain_sizes(&mut buf).unwrap();
        assert_eq!(
            got,
            vec![TermSize {
                width: 100,
                height: 50
            }]
        );
        assert!(buf.is_empty());
        let mut junk = br#""wide""#.to_vec();
        assert!(drain_sizes(&mut junk).is_err());
    }
}
