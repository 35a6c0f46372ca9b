//! WebSocket frames for the links ([`crate::probe::link`]), each message read into a buffer of exactly
//! its size and dropped once handled.
//!
//! Why not tungstenite's stream after the handshake: its read buffer grows to the largest frame
//! the connection ever received and keeps that size for the connection's life. With one
//! connection per node for hours, and replies of tens of KB (`SyncState` carries two tipsets per
//! sync worker, `NetPeers` every peer), that retained buffer was the largest cost per node
//! (issue #17). A [`FrameReader`] keeps a fixed [`READ_BUFFER`] for headers and small frames
//! (one `read` per buffer however tiny the frames: a flood of them costs little, issue #24) and
//! reads a large payload into a buffer of exactly its size, dropped once handled. tungstenite
//! still does the handshake and the frame header codec; this module only decides where the
//! bytes go.
//!
//! Caps, each of which drops the link (the probe falls back to HTTP): a message at most `limit`
//! bytes, in at most [`max_fragments`] fragments; at most [`MAX_CONTROLS_PER_SECOND`] control
//! frames a second, each at most 125 bytes (RFC 6455 §5.5); text messages must be UTF-8. A
//! close frame is answered ([`close`]).
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
pub(crate) enum Incoming {
    /// A text or binary message, fragments joined.
    Message(Vec<u8>),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// The peer sent a close frame: answer it with [`close`], then close.
    Close,
    /// The peer closed the connection.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("not a WebSocket frame: {0}")]
    Protocol(String),
    /// A cap on fragments or control frames was passed: the link is dropped.
    #[error("flood: {0}")]
    Flood(String),
}

/// Bytes read at a time into the reader's own buffer: every header and every frame that fits
/// goes through it, so a flood of tiny frames costs one `read` per buffer, not per frame.
/// Larger payloads are read into a buffer of exactly their size (memory at 1000 nodes).
pub(crate) const READ_BUFFER: usize = 2048;
/// Control frames (pings, pongs) a peer may send per second; a real daemon sends a few a
/// minute.
pub(crate) const MAX_CONTROLS_PER_SECOND: u32 = 20;
/// RFC 6455 §5.5: a control frame's payload is at most 125 bytes.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Fragments one message may have: a 4 KiB write buffer (gorilla/websocket's default, which
/// go-jsonrpc uses) fragments a message of `limit` bytes into `limit / 4096` frames; four
/// times that, and at least 1024, leave room. Endless empty continuations end here.
fn max_fragments(limit: usize) -> usize {
    (limit / 1024).max(1024)
}

/// Reads frames from one connection.
#[derive(Debug)]
pub(crate) struct FrameReader {
    limit: usize,
    /// Bytes read and not yet used: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A frame too large for `buf`, being filled.
    body: Option<Body>,
    /// The message being assembled from fragments, whether it is text, and how many.
    partial: Vec<u8>,
    in_message: Option<bool>,
    fragments: usize,
    /// Control frames in the current second.
    controls: (std::time::Instant, u32),
}

#[derive(Debug)]
struct Body {
    header: FrameHeader,
    data: Vec<u8>,
    filled: usize,
}

/// How many header bytes a frame whose first two bytes are `b0 b1` has.
fn header_len(b1: u8) -> usize {
    let extra = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extra + mask
}

impl FrameReader {
    /// A reader that refuses messages larger than `limit` bytes.
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            limit,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            body: None,
            partial: Vec::new(),
            in_message: None,
            fragments: 0,
            controls: (std::time::Instant::now(), 0),
        }
    }

    /// Reads more bytes into `buf` (moving what is left to its front first). `false`: the
    /// peer closed the connection.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<bool, FrameError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next whole message. Cancel-safe (see the module's doc).
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Incoming, FrameError> {
        loop {
            if let Some(body) = self.body.as_mut() {
                if body.filled < body.data.len() {
                    let n = r.read(&mut body.data[body.filled..]).await?;
                    if n == 0 {
                        return Ok(Incoming::Closed);
                    }
                    body.filled += n;
                    continue;
                }
                let Body { header, data, .. } = self.body.take().expect("checked");
                if let Some(m) = self.frame(header, data)? {
                    return Ok(m);
                }
                continue;
            }
            let have = self.end - self.start;
            let need = if have < 2 {
                2
            } else {
                header_len(self.buf[self.start + 1])
            };
            if have < need {
                if !self.fill(r).await? {
                    return Ok(Incoming::Closed);
                }
                continue;
            }
            let parsed =
                FrameHeader::parse(&mut Cursor::new(&self.buf[self.start..self.start + need]))
                    .map_err(|e| FrameError::Protocol(e.to_string()))?;
            let (header, len) =
                parsed.ok_or_else(|| FrameError::Protocol("a short header".into()))?;
            if len > (self.limit - self.partial.len()) as u64 {
                return Err(FrameError::TooLarge { limit: self.limit });
            }
            if matches!(header.opcode, OpCode::Control(_)) && len > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::Protocol(format!(
                    "a control frame of {len} bytes (at most {MAX_CONTROL_PAYLOAD})"
                )));
            }
            let len = len as usize;
            if need + len <= have {
                // The whole frame is in the buffer.
                let at = self.start + need;
                let data = self.buf[at..at + len].to_vec();
                self.start = at + len;
                if let Some(m) = self.frame(header, data)? {
                    return Ok(m);
                }
            } else if need + len <= READ_BUFFER {
                // A small frame, partly read: read the rest into the buffer.
                if !self.fill(r).await? {
                    return Ok(Incoming::Closed);
                }
            } else {
                // A large frame: its own buffer, starting with what is read already.
                let at = self.start + need;
                let mut data = vec![0; len];
                let filled = self.end - at;
                data[..filled].copy_from_slice(&self.buf[at..self.end]);
                (self.start, self.end) = (0, 0);
                self.body = Some(Body {
                    header,
                    data,
                    filled,
                });
            }
        }
    }

    /// One whole frame: a message, a ping or a close to hand out, or `None` (a fragment, a
    /// pong). Enforces the caps.
    fn frame(
        &mut self,
        header: FrameHeader,
        mut data: Vec<u8>,
    ) -> Result<Option<Incoming>, FrameError> {
        if let Some(mask) = header.mask {
            for (i, b) in data.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let text = match header.opcode {
            OpCode::Control(c) => {
                if !header.is_final {
                    return Err(FrameError::Protocol("a fragmented control frame".into()));
                }
                self.count_control()?;
                return Ok(match c {
                    Control::Ping => Some(Incoming::Ping(data)),
                    Control::Close => Some(Incoming::Close),
                    _ => None,
                });
            }
            OpCode::Data(Data::Text) if self.in_message.is_none() => true,
            OpCode::Data(Data::Binary) if self.in_message.is_none() => false,
            OpCode::Data(Data::Continue) if self.in_message.is_some() => {
                self.fragments += 1;
                if self.fragments > max_fragments(self.limit) {
                    return Err(FrameError::Flood(format!(
                        "a message in more than {} fragments",
                        max_fragments(self.limit)
                    )));
                }
                self.partial.extend_from_slice(&data);
                if !header.is_final {
                    return Ok(None);
                }
                let text = self.in_message.take().expect("checked");
                let data = std::mem::take(&mut self.partial);
                return self.whole(data, text).map(Some);
            }
            other => {
                return Err(FrameError::Protocol(format!(
                    "unexpected {other} frame (fragments out of order)"
                )))
            }
        };
        if header.is_final {
            return self.whole(data, text).map(Some);
        }
        self.in_message = Some(text);
        self.fragments = 1;
        self.partial = data;
        Ok(None)
    }

    /// A complete message; a text message must be UTF-8 (RFC 6455 §8.1).
    fn whole(&mut self, data: Vec<u8>, text: bool) -> Result<Incoming, FrameError> {
        self.fragments = 0;
        if text && std::str::from_utf8(&data).is_err() {
            return Err(FrameError::Protocol(
                "a text message that is not UTF-8".into(),
            ));
        }
        Ok(Incoming::Message(data))
    }

    fn count_control(&mut self) -> Result<(), FrameError> {
        let (since, seen) = &mut self.controls;
        if since.elapsed() >= std::time::Duration::from_secs(1) {
            (*since, *seen) = (std::time::Instant::now(), 0);
        }
        *seen += 1;
        if *seen > MAX_CONTROLS_PER_SECOND {
            return Err(FrameError::Flood(format!(
                "more than {MAX_CONTROLS_PER_SECOND} control frames in a second"
            )));
        }
        Ok(())
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
pub(crate) fn pong(payload: Vec<u8>) -> Vec<u8> {
    client_frame(Frame::pong(payload))
}

/// The answer to a close frame (RFC 6455 §5.5.1).
pub fn close() -> Vec<u8> {
    client_frame(Frame::close(None))
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
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
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
        assert_eq!(r.next(&mut s).await.unwrap(), Incoming::Close);
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

    /// An `AsyncRead` over bytes that counts the reads made of it.
    struct Counted<'a> {
        bytes: &'a [u8],
        reads: usize,
    }

    impl tokio::io::AsyncRead for Counted<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.reads += 1;
            let n = buf.remaining().min(self.bytes.len());
            buf.put_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn tiny_frames_cost_one_read_per_buffer_not_per_frame() {
        let bytes: Vec<u8> = (0..10_000).flat_map(|_| server(b"", TEXT, true)).collect();
        let mut src = Counted {
            bytes: &bytes,
            reads: 0,
        };
        let mut r = FrameReader::new(1 << 20);
        for _ in 0..10_000 {
            assert_eq!(r.next(&mut src).await.unwrap(), Incoming::Message(vec![]));
        }
        assert!(
            src.reads <= bytes.len() / READ_BUFFER + 2,
            "{} reads for {} bytes",
            src.reads,
            bytes.len()
        );
    }

    #[tokio::test]
    async fn endless_empty_continuations_and_ping_floods_drop_the_link() {
        let mut bytes = server(b"{", TEXT, false);
        for _ in 0..100_000 {
            bytes.extend(server(b"", OpCode::Data(Data::Continue), false));
        }
        let mut r = FrameReader::new(1 << 20);
        let e = r.next(&mut &bytes[..]).await.expect_err("a flood");
        assert!(matches!(e, FrameError::Flood(_)), "{e}");

        let pings: Vec<u8> = (0..1000)
            .flat_map(|_| server(b"x", OpCode::Control(Control::Ping), true))
            .collect();
        let mut r = FrameReader::new(1 << 20);
        let mut s = &pings[..];
        let mut answered = 0;
        let e = loop {
            match r.next(&mut s).await {
                Ok(Incoming::Ping(_)) => answered += 1,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, FrameError::Flood(_)), "{e}");
        assert_eq!(answered, MAX_CONTROLS_PER_SECOND);
    }

    #[tokio::test]
    async fn oversized_control_frames_and_invalid_utf8_are_refused() {
        // A ping of 126 bytes, written by hand (tungstenite would refuse to write it).
        let mut big = vec![0x89, 126, 0, 126];
        big.extend([b'x'; 126]);
        let e = FrameReader::new(1 << 20)
            .next(&mut &big[..])
            .await
            .expect_err("too big");
        assert!(matches!(e, FrameError::Protocol(_)), "{e}");
        let bad = server(&[0xff, 0xfe], TEXT, true);
        let e = FrameReader::new(100)
            .next(&mut &bad[..])
            .await
            .expect_err("not UTF-8");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        let binary = server(&[0xff, 0xfe], OpCode::Data(Data::Binary), true);
        let got = FrameReader::new(100)
            .next(&mut &binary[..])
            .await
            .expect("binary");
        assert_eq!(got, Incoming::Message(vec![0xff, 0xfe]));
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
