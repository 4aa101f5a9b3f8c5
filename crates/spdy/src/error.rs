use std::io;

/// Why a session or stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spdy session is closed")]
    Closed,
    #[error("spdy session is going away (GOAWAY sent or received); no new streams")]
    GoingAway,
    #[error("spdy stream {id} was reset by the peer with status {status} ({})", status_name(*status))]
    Reset { id: u32, status: u32 },
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    #[error("spdy header block: {0}")]
    Headers(String),
    #[error("spdy connection i/o: {0}")]
    Io(#[from] io::Error),
    #[error("spdy stream ids exhausted on this session")]
    StreamIdsExhausted,
}

/// RST_STREAM status names from SPDY/3.1 section 2.6.3.
pub fn status_name(status: u32) -> &'static str {
    match status {
        1 => "PROTOCOL_ERROR",
        2 => "INVALID_STREAM",
        3 => "REFUSED_STREAM",
        4 => "UNSUPPORTED_VERSION",
        5 => "CANCEL",
        6 => "INTERNAL_ERROR",
        7 => "FLOW_CONTROL_ERROR",
        8 => "STREAM_IN_USE",
        9 => "STREAM_ALREADY_CLOSED",
        11 => "FRAME_TOO_LARGE",
        _ => "unknown",
    }
}
