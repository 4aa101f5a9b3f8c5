//! A SYN_STREAM captured from a browser (SPDY/3, a request to facebook.com), as published in
//! proxygen's SPDY codec tests: decoding it proves our dictionary and zlib handling match a
//! real implementation's.
#![allow(clippy::unwrap_used)]

use berth_spdy::frame::{Frame, FrameReader};
use bytes::BytesMut;

#[test]
fn firefox_syn_stream_decodes() {
    let wire = include_bytes!("data/firefox-syn-stream.spdy3");
    let mut buf = BytesMut::from(&wire[..]);
    let frame = FrameReader::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    let Frame::SynStream {
        stream_id,
        fin,
        headers,
        ..
    } = frame
    else {
        panic!("{frame:?}")
    };
    assert_eq!(stream_id, 1);
    assert!(fin);
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(headers.len(), 13);
    assert_eq!(get(":method"), Some("GET"));
    assert_eq!(get(":host"), Some("www.afrind.sb.facebook.com"));
    assert_eq!(get(":path"), Some("/status.php"));
    assert_eq!(get("accept-language"), Some("en-US,en;q=0.8"));
    assert!(get("user-agent")
        .unwrap()
        .starts_with("Mozilla/5.0 (Macintosh;"));
}
