//! WebSocket frames for the links ([`crate::link`]), each message read into a buffer of exactly
//! its size and dropped once handled.
//!
//! Why not tungstenite's stream after the handshake: its read buffer grows to the largest frame
//! the connection ever received and keeps that size for the connection's life. With one
//! connection per node for hours, and replies of tens of KB (`SyncState` carries two tipsets per
//! sync worker, `NetPeers` every peer), that retained buffer was the largest cost per node
//! (issue #17). Between messages a [`FrameReader`] holds 14 bytes. tungstenite still does the
//! handshake and the frame header codec; this module only decides where the bytes go.
//!
//! Every await in [`FrameReader::next`] is one `read` whose bytes are stored before the next
//! one, so the future can be dropped by a `select!` at any point and called again without
//! losing data.

use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// A whole message from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text or binary message, fragments joined.
    Message(Vec<u8>),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// The peer sent a close frame or closed the connection.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("not a WebSocket frame: {0}")]
    Protocol(String),
}

/// The longest frame header: 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Reads frames from one connection.
#[derive(Debug)]
pub struct FrameReader {
    limit: usize,
    head: [u8; MAX_HEADER],
    have: usize,
    body: Option<Body>,
    /// Fragments of a message not yet complete.
    partial: Vec<u8>,
}

#[derive(Debug)]
struct Body {
    header: FrameHeader,
    data: Vec<u8>,
    filled: usize,
}

impl FrameReader {
    /// A reader that refuses messages larger than `limit` bytes.
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            limit,
            head: [0; MAX_HEADER],
            have: 0,
            body: None,
            partial: Vec::new(),
        }
    }

    /// How many header bytes the frame starting in `head` has, once its first two are known.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let len7 = self.head[1] & 0x7f;
        let extra = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extra + mask
    }

    /// The next whole message. Cancel-safe (see the module's doc).
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Incoming, FrameError> {
        loop {
            let Some(body) = self.body.as_mut() else {
                let need = self.header_len();
                if self.have < need {
                    let n = r.read(&mut self.head[self.have..need]).await?;
                    if n == 0 {
                        return Ok(Incoming::Closed);
                    }
                    self.have += n;
                    continue;
                }
                let parsed = FrameHeader::parse(&mut Cursor::new(&self.head[..need]))
                    .map_err(|e| FrameError::Protocol(e.to_string()))?;
                let (header, len) =
                    parsed.ok_or_else(|| FrameError::Protocol("a short header".into()))?;
                self.have = 0;
                if len > (self.limit - self.partial.len()) as u64 {
                    return Err(FrameError::TooLarge { limit: self.limit });
                }
                self.body = Some(Body {
                    header,
                    data: vec![0; len as usize],
                    filled: 0,
                });
                continue;
            };
            if body.filled < body.data.len() {
                let n = r.read(&mut body.data[body.filled..]).await?;
                if n == 0 {
                    return Ok(Incoming::Closed);
                }
                body.filled += n;
                continue;
            }
            let Body {
                header, mut data, ..
            } = self.body.take().expect("checked");
            if let Some(mask) = header.mask {
                for (i, b) in data.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match header.opcode {
                OpCode::Control(Control::Ping) => return Ok(Incoming::Ping(data)),
                OpCode::Control(Control::Close) => return Ok(Incoming::Closed),
                OpCode::Control(_) => continue,
                OpCode::Data(Data::Text | Data::Binary) if self.partial.is_empty() => {
                    if header.is_final {
                        return Ok(Incoming::Message(data));
                    }
                    self.partial = data;
                }
                OpCode::Data(Data::Continue) if !self.partial.is_empty() => {
                    self.partial.extend_from_slice(&data);
                    if header.is_final {
                        return Ok(Incoming::Message(std::mem::take(&mut self.partial)));
                    }
                }
                other => {
                    return Err(FrameError::Protocol(format!(
                        "unexpected {other} frame (fragments out of order)"
                    )))
                }
            }
        }
    }
}

/// A client's frame: masked with a fresh random key, as RFC 6455 §5.3 requires.
fn client_frame(mut frame: Frame) -> Vec<u8> {
    frame.header_mut().mask = Some(rand::random());
    let mut out = Vec::with_capacity(frame.len());
    frame
        .format(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// A text message, ready for the socket.
pub fn text(payload: String) -> Vec<u8> {
    client_frame(Frame::message(
        payload.into_bytes(),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// The answer to a ping.
pub fn pong(payload: Vec<u8>) -> Vec<u8> {
    client_frame(Frame::pong(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A server's (unmasked) frame.
    fn server(payload: &[u8], opcode: OpCode, fin: bool) -> Vec<u8> {
        let frame = match opcode {
            OpCode::Control(Control::Ping) => Frame::ping(payload.to_vec()),
            OpCode::Control(_) => Frame::close(None),
            data => Frame::message(payload.to_vec(), data, fin),
        };
        let mut out = Vec::new();
        frame.format(&mut out).expect("format");
        out
    }

    const TEXT: OpCode = OpCode::Data(Data::Text);

    #[tokio::test]
    async fn messages_of_every_length_form_arrive_whole() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = server(&payload, TEXT, true);
            let mut r = FrameReader::new(1 << 20);
            let got = r.next(&mut &bytes[..]).await.expect("a message");
            assert_eq!(got, Incoming::Message(payload), "length {len}");
        }
    }

    #[tokio::test]
    async fn fragments_are_joined_and_pings_pass_between_them() {
        let mut bytes = server(b"ab", TEXT, false);
        bytes.extend(server(b"hi", OpCode::Control(Control::Ping), true));
        bytes.extend(server(b"cd", OpCode::Data(Data::Continue), true));
        bytes.extend(server(b"", OpCode::Control(Control::Close), true));
        let mut r = FrameReader::new(100);
        let mut s = &bytes[..];
        assert_eq!(
            r.next(&mut s).await.unwrap(),
            Incoming::Ping(b"hi".to_vec())
        );
        assert_eq!(
            r.next(&mut s).await.unwrap(),
            Incoming::Message(b"abcd".to_vec())
        );
        assert_eq!(r.next(&mut s).await.unwrap(), Incoming::Closed);
        assert_eq!(
            r.next(&mut s).await.unwrap(),
            Incoming::Closed,
            "end of stream"
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let bytes = server(&[b'x'; 1000], TEXT, true);
        let mut r = FrameReader::new(999);
        let e = r.next(&mut &bytes[..]).await.expect_err("too large");
        assert!(matches!(e, FrameError::TooLarge { limit: 999 }));
        // Fragments count together.
        let mut bytes = server(&[b'x'; 600], TEXT, false);
        bytes.extend(server(&[b'x'; 600], OpCode::Data(Data::Continue), true));
        let e = FrameReader::new(999)
            .next(&mut &bytes[..])
            .await
            .expect_err("too large");
        assert!(matches!(e, FrameError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn a_stray_continuation_is_a_protocol_error() {
        let bytes = server(b"x", OpCode::Data(Data::Continue), true);
        let e = FrameReader::new(100)
            .next(&mut &bytes[..])
            .await
            .expect_err("error");
        assert!(matches!(e, FrameError::Protocol(_)), "{e}");
    }

    #[tokio::test]
    async fn reading_can_be_cancelled_anywhere_and_resumed() {
        let payload = vec![7u8; 70_000];
        let bytes = server(&payload, TEXT, true);
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let mut r = FrameReader::new(1 << 20);
        // Feed a few bytes at a time; between feeds, a read is started and abandoned.
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(7) {
                tx.write_all(chunk).await.expect("write");
                tokio::task::yield_now().await;
            }
            tx
        });
        let got = loop {
            match tokio::time::timeout(std::time::Duration::from_micros(50), r.next(&mut rx)).await
            {
                Ok(m) => break m.expect("a message"),
                Err(_) => continue,
            }
        };
        assert_eq!(got, Incoming::Message(payload));
        drop(writer.await);
    }

    #[test]
    fn client_frames_are_masked_and_decode_to_their_payload() {
        let out = text("hello".into());
        assert_eq!(out[1] & 0x80, 0x80, "mask bit");
        let (header, len) = FrameHeader::parse(&mut Cursor::new(&out[..]))
            .unwrap()
            .unwrap();
        let mask = header.mask.expect("a mask");
        let body: Vec<u8> = out[out.len() - len as usize..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(body, b"hello");
        assert_ne!(text("a".into())[2..6], text("a".into())[2..6], "fresh keys");
        let p = pong(b"hi".to_vec());
        assert_eq!(p[0], 0x8a, "a final pong");
    }
}
