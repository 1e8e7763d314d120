//! The socket loop: bytes ↔ frames, and deadlines.
//!
//! One task per connection runs [`run`]: it owns the write half and moves bytes
//! between the socket, the connection's hub subscription and a [`Session`]. A
//! second task reads frames (fastwebsockets' `read_frame` is not cancel-safe, so it
//! is never raced in a `select!`) and feeds them to a [`Reassembler`], the state
//! machine that enforces RFC 6455 on what clients send: every client frame masked,
//! a fragmented message made of one Text/Binary frame and Continuations only,
//! messages under the size limit, text in UTF-8. A violation ends the connection
//! with the close code the RFC names (1002, 1007, 1009).
//!
//! Deadlines: every write must complete within the write timeout, so a peer that
//! never reads is dropped instead of holding its buffers forever; heartbeats and
//! the Socket.IO CONNECT deadline run on the session's tick.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{close, Backend, Ctx, Out, RealtimeStats, Session, Timing};
use crate::hub::{Closed, Delivery, Hub, Subscription};

/// What a connection needs besides its session.
pub(crate) struct Conn {
    /// Where the session's questions are answered.
    pub backend: Arc<dyn Backend>,
    /// The hub.
    pub hub: Hub,
    /// Counters.
    pub stats: Arc<RealtimeStats>,
    /// Largest message accepted from the client, in bytes.
    pub max_message: usize,
    /// Deadlines.
    pub timing: Timing,
}

/// What the reader forwards to the loop.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary,
    /// A ping: answer with a pong carrying `payload`.
    Ping(Vec<u8>),
    /// A pong: the peer is alive.
    Alive,
    /// A frame fastwebsockets obliges us to send (the reply to a close).
    Obligated(OpCode, Vec<u8>),
    /// The peer closed or went away.
    Closed,
    /// The peer broke the protocol: close with this code and reason.
    Violation(u16, String),
}

/// Turns client frames into messages under RFC 6455's rules; no I/O.
#[derive(Debug)]
pub(crate) struct Reassembler {
    partial: Option<(OpCode, Vec<u8>)>,
    max: usize,
}

impl Reassembler {
    /// A reassembler for messages of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Reassembler {
        Reassembler { partial: None, max }
    }

    fn violation(code: u16, why: &str) -> Option<Inbound> {
        Some(Inbound::Violation(code, why.to_owned()))
    }

    /// Takes one frame; returns what the loop must act on, `None` while a
    /// fragmented message is incomplete.
    pub(crate) fn push(
        &mut self,
        fin: bool,
        opcode: OpCode,
        masked: bool,
        payload: &[u8],
    ) -> Option<Inbound> {
        // RFC 6455 5.1: a server MUST close the connection on an unmasked frame.
        if !masked {
            return Self::violation(close::PROTOCOL, "client frames must be masked");
        }
        match opcode {
            OpCode::Close => Some(Inbound::Closed),
            OpCode::Ping => Some(Inbound::Ping(payload.to_vec())),
            OpCode::Pong => Some(Inbound::Alive),
            OpCode::Text | OpCode::Binary => {
                // RFC 6455 5.4: fragments of one message are not interleaved with
                // another data message.
                if self.partial.is_some() {
                    return Self::violation(
                        close::PROTOCOL,
                        "a new message began inside a fragmented one",
                    );
                }
                if payload.len() > self.max {
                    return self.too_big();
                }
                if fin {
                    return Some(self.whole(opcode, payload.to_vec()));
                }
                self.partial = Some((opcode, payload.to_vec()));
                None
            }
            OpCode::Continuation => {
                let Some((_, buf)) = self.partial.as_mut() else {
                    return Self::violation(
                        close::PROTOCOL,
                        "a continuation frame without a message to continue",
                    );
                };
                if buf.len() + payload.len() > self.max {
                    return self.too_big();
                }
                buf.extend_from_slice(payload);
                if !fin {
                    return None;
                }
                let (op, bytes) = self.partial.take()?;
                Some(self.whole(op, bytes))
            }
        }
    }

    fn too_big(&self) -> Option<Inbound> {
        Some(Inbound::Violation(
            close::TOO_BIG,
            format!("messages are limited to {} bytes", self.max),
        ))
    }

    fn whole(&self, op: OpCode, bytes: Vec<u8>) -> Inbound {
        if op == OpCode::Binary {
            return Inbound::Binary;
        }
        match String::from_utf8(bytes) {
            Ok(text) => Inbound::Text(text),
            Err(_) => Inbound::Violation(
                close::INVALID_DATA,
                "a text message is not valid UTF-8".into(),
            ),
        }
    }
}

/// What a read error means for the connection.
pub(crate) fn read_error(e: &WebSocketError, max: usize) -> Inbound {
    match e {
        WebSocketError::ConnectionClosed
        | WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_) => Inbound::Closed,
        WebSocketError::FrameTooLarge => Inbound::Violation(
            close::TOO_BIG,
            format!("messages are limited to {max} bytes"),
        ),
        WebSocketError::InvalidUTF8 => Inbound::Violation(
            close::INVALID_DATA,
            "a text message is not valid UTF-8".into(),
        ),
        other => Inbound::Violation(close::PROTOCOL, other.to_string()),
    }
}

/// Whether a frame came masked. fastwebsockets unmasks the payload but keeps the
/// key, and shows it only through the header it would write.
fn is_masked(frame: &mut Frame<'_>) -> bool {
    let mut head = [0u8; 16];
    frame.fmt_head(&mut head);
    head[1] & 0x80 != 0
}

/// Reads frames and forwards what the [`Reassembler`] makes of them.
async fn read_loop<S>(
    mut rx: fastwebsockets::WebSocketRead<S>,
    tx: mpsc::Sender<Inbound>,
    max: usize,
) where
    S: AsyncRead + Unpin,
{
    let mut reassembler = Reassembler::new(max);
    loop {
        let ctl = tx.clone();
        let mut obligated = move |f: Frame<'_>| {
            let ctl = ctl.clone();
            let msg = Inbound::Obligated(f.opcode, f.payload.to_vec());
            async move { ctl.send(msg).await.map_err(|_| "the session has ended") }
        };
        let msg = match rx.read_frame(&mut obligated).await {
            Ok(mut frame) => {
                let masked = is_masked(&mut frame);
                match reassembler.push(frame.fin, frame.opcode, masked, &frame.payload) {
                    Some(msg) => msg,
                    None => continue,
                }
            }
            Err(e) => read_error(&e, max),
        };
        let last = matches!(msg, Inbound::Closed | Inbound::Violation(..));
        if tx.send(msg).await.is_err() || last {
            return;
        }
    }
}

pub(crate) async fn next_delivery(sub: &mut Option<Subscription>) -> Option<Delivery> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    /// The websocket failed.
    #[error(transparent)]
    Ws(#[from] WebSocketError),
    /// A write did not complete within the write timeout.
    #[error("a write did not complete within {0:?}: the peer is not reading")]
    WriteTimeout(Duration),
}

/// The write half with its deadline.
pub(crate) struct Writer<W> {
    inner: fastwebsockets::WebSocketWrite<W>,
    timeout: Duration,
    stats: Arc<RealtimeStats>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn write(&mut self, frame: Frame<'_>) -> Result<(), Ended> {
        match tokio::time::timeout(self.timeout, self.inner.write_frame(frame)).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                self.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_ws_write_timeouts_total").increment(1);
                Err(Ended::WriteTimeout(self.timeout))
            }
        }
    }

    /// Writes the actions; `true` once a close was sent.
    pub(crate) async fn perform(&mut self, actions: Vec<Out>) -> Result<bool, Ended> {
        for action in actions {
            match action {
                Out::Text(bytes) => self.write(Frame::text(Payload::Borrowed(&bytes))).await?,
                Out::Ping => {
                    self.write(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")))
                        .await?
                }
                Out::Close(code, reason) => {
                    let reason = truncate_reason(&reason);
                    let _ = self.write(Frame::close(code, reason.as_bytes())).await;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Answers what the reader forwarded that the socket layer handles itself
    /// (pings, the frames fastwebsockets obliges us to send); `Ok(true)` when the
    /// message was one of those.
    pub(crate) async fn answer_control(&mut self, msg: &mut Inbound) -> Result<bool, Ended> {
        match msg {
            Inbound::Ping(payload) => {
                let payload = std::mem::take(payload);
                self.write(Frame::pong(Payload::Owned(payload))).await?;
                Ok(true)
            }
            Inbound::Obligated(op, payload) => {
                let (op, payload) = (*op, std::mem::take(payload));
                self.write(Frame::new(true, op, None, Payload::Owned(payload)))
                    .await?;
                Ok(op != OpCode::Close)
            }
            Inbound::Alive => Ok(true),
            _ => Ok(false),
        }
    }
}

/// An upgraded websocket split in two: the reader task's messages and the write
/// half. The reader task ends when the link is dropped.
pub(crate) struct Link<W> {
    /// What the reader forwards.
    pub inbound: mpsc::Receiver<Inbound>,
    /// The write half, with its deadline.
    pub writer: Writer<W>,
    reader: tokio::task::JoinHandle<()>,
}

impl<W> Drop for Link<W> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Splits `ws` and starts its reader under the connection's message limit.
pub(crate) fn open<S>(
    ws: WebSocket<S>,
    stats: Arc<RealtimeStats>,
    max: usize,
    timing: Timing,
) -> Link<tokio::io::WriteHalf<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rx, writer) = ws.split(tokio::io::split);
    rx.set_max_message_size(max.saturating_add(1));
    // Pings are answered by the loop, after their mask is checked.
    rx.set_auto_pong(false);
    let (in_tx, inbound) = mpsc::channel(8);
    let reader = tokio::spawn(read_loop(rx, in_tx, max));
    Link {
        inbound,
        writer: Writer {
            inner: writer,
            timeout: timing.write_timeout,
            stats,
        },
        reader,
    }
}

/// Drives one connection until either side closes.
pub(crate) async fn run<S>(
    ws: WebSocket<S>,
    conn: Conn,
    mut session: impl Session,
) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = open(ws, conn.stats.clone(), conn.max_message, conn.timing);
    let mut sub: Option<Subscription> = None;
    let first = {
        let mut ctx = Ctx {
            backend: conn.backend.as_ref(),
            hub: &conn.hub,
            sub: &mut sub,
        };
        session.start(&mut ctx).await
    };
    drive(link, conn, session, sub, first).await
}

/// Drives a session that already exists (a new one after its `start`, or one
/// that moved here from another transport with its subscription): `first` is
/// written, then the loop runs until either side closes.
pub(crate) async fn drive<W>(
    link: Link<W>,
    conn: Conn,
    mut session: impl Session,
    mut sub: Option<Subscription>,
    first: Vec<Out>,
) -> Result<(), Ended>
where
    W: AsyncWrite + Unpin,
{
    let Conn { backend, hub, .. } = conn;
    let mut link = link;
    let mut last_seen = Instant::now();
    let mut tick = tokio::time::interval(session.tick_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let closing = hub.closing().clone();
    let mut resyncs = hub.resyncs();
    let writer = &mut link.writer;
    let inbound = &mut link.inbound;

    let result = async {
        let mut done = writer.perform(first).await?;
        while !done {
            let replaying = session.replaying();
            // Not biased: a client that floods messages must not starve its own
            // heartbeat, deliveries (and so the hub's slow-consumer check) or replay.
            let actions = tokio::select! {
                msg = inbound.recv() => {
                    last_seen = Instant::now();
                    match msg {
                        Some(Inbound::Text(text)) => {
                            let mut ctx = Ctx { backend: backend.as_ref(), hub: &hub, sub: &mut sub };
                            session.on_text(&mut ctx, &text).await
                        }
                        Some(Inbound::Binary) => vec![Out::Close(
                            close::UNSUPPORTED,
                            "binary messages are not supported".into(),
                        )],
                        Some(mut control @ (Inbound::Ping(_) | Inbound::Obligated(..) | Inbound::Alive)) => {
                            if !writer.answer_control(&mut control).await? {
                                break;
                            }
                            Vec::new()
                        }
                        Some(Inbound::Violation(code, why)) => vec![Out::Close(code, why)],
                        Some(Inbound::Closed) | None => break,
                    }
                }
                _ = closing.cancelled(), if sub.is_none() => {
                    vec![Out::Close(close::GOING_AWAY, "the server is shutting down".into())]
                }
                now = tick.tick() => session.on_tick(now.into_std(), last_seen),
                Ok(()) = resyncs.changed() => {
                    if let Some(after) = *resyncs.borrow_and_update() {
                        session.resync(after);
                    }
                    Vec::new()
                }
                // One replay page at a time: written before the next is read.
                () = std::future::ready(()), if replaying => {
                    let mut ctx = Ctx { backend: backend.as_ref(), hub: &hub, sub: &mut sub };
                    session.next_page(&mut ctx).await
                }
                delivery = next_delivery(&mut sub), if !replaying => match delivery {
                    Some(d) => {
                        let mut out = Vec::new();
                        out.extend(session.on_delivery(&d).map(Out::Text));
                        // Drain what is already queued so a burst costs few wakeups.
                        if let Some(s) = sub.as_mut() {
                            for _ in 0..64 {
                                let Some(d) = s.try_recv() else { break };
                                out.extend(session.on_delivery(&d).map(Out::Text));
                            }
                        }
                        out
                    }
                    None => vec![ended_close(sub.as_ref())],
                },
            };
            done = writer.perform(actions).await?;
        }
        Ok(())
    }
    .await;
    drop(link);
    drop(sub);
    result
}

/// The close for a subscription the hub ended: too slow, or shutting down.
pub(crate) fn ended_close(sub: Option<&Subscription>) -> Out {
    match sub.and_then(Subscription::closed) {
        Some(Closed::TooSlow) => Out::Close(
            close::TRY_AGAIN_LATER,
            "too slow: the outbound queue overflowed".into(),
        ),
        _ => Out::Close(close::GOING_AWAY, "the server is shutting down".into()),
    }
}

/// A close reason must fit the 123 bytes a control frame leaves for it.
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &mut Reassembler, fin: bool, op: OpCode, s: &str) -> Option<Inbound> {
        r.push(fin, op, true, s.as_bytes())
    }

    #[test]
    fn fragments_are_reassembled_around_control_frames() {
        let mut r = Reassembler::new(100);
        assert_eq!(text(&mut r, false, OpCode::Text, "he"), None);
        assert_eq!(
            r.push(true, OpCode::Ping, true, b"p"),
            Some(Inbound::Ping(b"p".to_vec()))
        );
        assert_eq!(text(&mut r, false, OpCode::Continuation, "l"), None);
        assert_eq!(
            text(&mut r, true, OpCode::Continuation, "lo"),
            Some(Inbound::Text("hello".into()))
        );
        assert_eq!(
            text(&mut r, true, OpCode::Text, "x"),
            Some(Inbound::Text("x".into()))
        );
    }

    fn code(i: Option<Inbound>) -> u16 {
        match i {
            Some(Inbound::Violation(code, _)) => code,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn protocol_violations_close_with_the_rfc_codes() {
        let mut r = Reassembler::new(100);
        assert_eq!(
            code(r.push(true, OpCode::Text, false, b"x")),
            close::PROTOCOL
        );
        assert_eq!(
            code(r.push(true, OpCode::Ping, false, b"")),
            close::PROTOCOL
        );
        let mut r = Reassembler::new(100);
        assert_eq!(text(&mut r, false, OpCode::Text, "a"), None);
        assert_eq!(
            code(text(&mut r, false, OpCode::Text, "b")),
            close::PROTOCOL
        );
        let mut r = Reassembler::new(100);
        assert_eq!(text(&mut r, false, OpCode::Binary, "a"), None);
        assert_eq!(code(text(&mut r, true, OpCode::Text, "b")), close::PROTOCOL);
        let mut r = Reassembler::new(100);
        assert_eq!(
            code(text(&mut r, true, OpCode::Continuation, "b")),
            close::PROTOCOL
        );
        let mut r = Reassembler::new(4);
        assert_eq!(text(&mut r, false, OpCode::Text, "abc"), None);
        assert_eq!(
            code(text(&mut r, true, OpCode::Continuation, "de")),
            close::TOO_BIG
        );
        let mut r = Reassembler::new(4);
        assert_eq!(
            code(text(&mut r, false, OpCode::Text, "abcde")),
            close::TOO_BIG
        );
        let mut r = Reassembler::new(4);
        assert_eq!(
            code(r.push(true, OpCode::Text, true, &[0xff])),
            close::INVALID_DATA
        );
        assert_eq!(
            r.push(true, OpCode::Binary, true, &[0xff]),
            Some(Inbound::Binary)
        );
    }

    #[test]
    fn read_errors_map_to_close_codes() {
        assert_eq!(
            read_error(&WebSocketError::UnexpectedEOF, 1),
            Inbound::Closed
        );
        assert!(matches!(
            read_error(&WebSocketError::ReservedBitsNotZero, 1),
            Inbound::Violation(close::PROTOCOL, _)
        ));
        assert!(matches!(
            read_error(&WebSocketError::FrameTooLarge, 1),
            Inbound::Violation(close::TOO_BIG, _)
        ));
    }

    #[test]
    fn the_mask_bit_is_read_from_the_frame() {
        let mut plain = Frame::text(Payload::Borrowed(b"x"));
        assert!(!is_masked(&mut plain));
        let mut masked = Frame::new(
            true,
            OpCode::Text,
            Some([1, 2, 3, 4]),
            Payload::Borrowed(b"x"),
        );
        assert!(is_masked(&mut masked));
    }

    fn opcode() -> impl proptest::strategy::Strategy<Value = OpCode> {
        proptest::prop_oneof![
            proptest::strategy::Just(OpCode::Continuation),
            proptest::strategy::Just(OpCode::Text),
            proptest::strategy::Just(OpCode::Binary),
            proptest::strategy::Just(OpCode::Close),
            proptest::strategy::Just(OpCode::Ping),
            proptest::strategy::Just(OpCode::Pong),
        ]
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frame_sequences_never_panic_nor_exceed_the_limit(
            frames in proptest::collection::vec(
                (proptest::bool::ANY, opcode(), proptest::bool::weighted(0.95),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..40,
            )
        ) {
            let mut r = Reassembler::new(64);
            for (fin, op, masked, payload) in frames {
                match r.push(fin, op, masked, &payload) {
                    Some(Inbound::Text(t)) => proptest::prop_assert!(t.len() <= 64),
                    Some(Inbound::Violation(..) | Inbound::Closed) => break,
                    _ => {}
                }
                if let Some((_, buf)) = &r.partial {
                    proptest::prop_assert!(buf.len() <= 64);
                }
            }
        }
    }

    #[test]
    fn close_reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(cut));
    }
}
