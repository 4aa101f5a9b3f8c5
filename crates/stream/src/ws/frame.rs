//! Channel framing: binary messages `[channel, data...]`, or text messages
//! `<ASCII channel digit><base64 data>` for the base64 variants (for browsers).

use base64::Engine;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Binary,
    Base64,
}

pub(crate) fn encode(enc: Encoding, ch: u8, data: &[u8]) -> Message {
    match enc {
        Encoding::Binary => {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(ch);
            v.extend_from_slice(data);
            Message::Binary(Bytes::from(v))
        }
        Encoding::Base64 => {
            let mut s = String::with_capacity(data.len() * 4 / 3 + 5);
            s.push(char::from(b'0'.wrapping_add(ch)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::Text(s.into())
        }
    }
}

/// The channel and payload of a data message; `None` for control and empty messages.
pub(crate) fn decode(enc: Encoding, msg: Message) -> Option<(u8, Vec<u8>)> {
    match (enc, msg) {
        (Encoding::Binary, Message::Binary(b)) => {
            let (&ch, rest) = b.split_first()?;
            Some((ch, rest.to_vec()))
        }
        (Encoding::Base64, Message::Text(t)) => {
            let (&ch, rest) = t.as_bytes().split_first()?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((ch.wrapping_sub(b'0'), data))
        }
        // Binary frames stay meaningful in base64 mode (v5's close signal is binary).
        (Encoding::Base64, Message::Binary(b)) => {
            let (&ch, rest) = b.split_first()?;
            Some((ch, rest.to_vec()))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for enc in [Encoding::Binary, Encoding::Base64] {
            let m = encode(enc, 2, b"hello\x00\xff");
            assert_eq!(decode(enc, m), Some((2, b"hello\x00\xff".to_vec())));
        }
        assert_eq!(
            encode(Encoding::Base64, 1, b"hi"),
            Message::Text("1aGk=".into())
        );
        assert_eq!(
            decode(Encoding::Binary, Message::Binary(Bytes::new())),
            None
        );
    }
}
