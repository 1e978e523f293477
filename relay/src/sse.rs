//! A fallback transport for browsers that will not open a WebSocket to this relay: events from
//! the relay as a server-sent event stream, messages to it as one POST each.
//!
//! Why: iOS Safari refuses a `wss://` connection to a relay whose self-signed certificate the
//! person accepted for the page (WebKit bug 145819), while plain HTTPS requests to it work. The
//! session over this transport is the WebSocket session itself — the same challenge, limits,
//! routing and close codes ([`crate::server`]) — carried differently:
//!
//! - `GET /sse` opens the stream. Its first event names the session (`s` + 16 random bytes,
//!   hex); then every WebSocket message the relay would send is one event: `data: ` + a tag
//!   (`t` text, `b` binary, `p` ping, `c` close: code and reason) + the message in base64.
//! - `POST /sse/SESSION` carries one message to the relay: a tag byte (`t` text, `b` binary,
//!   `p` pong) and the raw message. `204` when queued; `404` for a session that is not open;
//!   `413` past the frame limit; `429` when the session's queue is full.
//!
//! The session name is a handle, not a credential: the session's key is proven by the signed
//! challenge answer like any other, and every frame is signed end to end, so a frame posted by
//! someone else who learned the name can forge nothing (the host's checks drop it).

use std::collections::HashMap;
use std::sync::Mutex;

use std::future::Future as _;

use futures_util::{Sink, Stream};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Messages a session may have waiting from POSTs before further ones get `429`.
pub const QUEUE: usize = 64;

/// The open sessions, by name.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, mpsc::Sender<Message>>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Message>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session: its name, and the stream of what is posted to it, which ends when
    /// `gone` fires or is dropped (the client closed its event stream). The name is forgotten
    /// when the stream is dropped.
    pub fn open(
        self: &std::sync::Arc<Self>,
        gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<
        (String, impl Stream<Item = Result<Message, WsError>> + Unpin + use<>),
        getrandom::Error,
    > {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let name = hex::encode(bytes);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().insert(name.clone(), tx);
        let inbound = Inbound { rx, name: name.clone(), sessions: self.clone(), gone: Some(gone) };
        Ok((name, inbound))
    }

    /// Hands a posted message to its session.
    pub fn post(&self, name: &str, message: Message) -> Posted {
        let Some(tx) = self.lock().get(name).cloned() else { return Posted::NoSession };
        match tx.try_send(message) {
            Ok(()) => Posted::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Posted::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Posted::NoSession,
        }
    }
}

/// What became of a POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Queued for the session.
    Queued,
    /// No such session is open.
    NoSession,
    /// The session's queue is full.
    Full,
}

struct Inbound {
    rx: mpsc::Receiver<Message>,
    name: String,
    sessions: std::sync::Arc<Sessions>,
    gone: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Stream for Inbound {
    type Item = Result<Message, WsError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(gone) = self.gone.as_mut()
            && std::pin::Pin::new(gone).poll(cx).is_ready()
        {
            return std::task::Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.name);
    }
}

/// A posted body as the message it carries, or why it is not one.
pub fn decode_post(body: &[u8]) -> Result<Message, &'static str> {
    match body.split_first() {
        Some((b't', text)) => std::str::from_utf8(text)
            .map(|t| Message::text(t.to_owned()))
            .map_err(|_| "a text message is not UTF-8"),
        Some((b'b', bytes)) => Ok(Message::binary(bytes.to_vec())),
        Some((b'p', _)) => Ok(Message::Pong(Default::default())),
        _ => Err("a posted message starts with t, b or p"),
    }
}

/// One message as a server-sent event.
pub fn encode_event(message: &Message) -> Option<String> {
    let b64 = |bytes: &[u8]| base64_simd::STANDARD.encode_to_string(bytes);
    let (tag, body) = match message {
        Message::Text(text) => ('t', b64(text.as_bytes())),
        Message::Binary(bytes) => ('b', b64(bytes)),
        Message::Ping(_) => ('p', String::new()),
        Message::Close(frame) => {
            let (code, reason) =
                frame.as_ref().map_or((1000, ""), |f| (u16::from(f.code), f.reason.as_str()));
            ('c', b64(format!("{code} {reason}").as_bytes()))
        }
        Message::Pong(_) | Message::Frame(_) => return None,
    };
    Some(format!("data: {tag}{body}\n\n"))
}

/// The head of the event stream's answer.
/// Any page may open it (`Access-Control-Allow-Origin: *`): the relay keeps no cookie or other
/// credential a page could borrow, and what travels is signed end to end; a page on an origin
/// of its own reaches the relay the link names.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
     Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
     Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n";

/// The sending half of an event stream: each message written and flushed as one event.
pub fn event_sink<W>(writer: W) -> impl Sink<Message, Error = WsError> + Unpin + Send + 'static
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(futures_util::sink::unfold(writer, |mut writer, message: Message| async move {
        if let Some(event) = encode_event(&message) {
            writer.write_all(event.as_bytes()).await?;
            writer.flush().await?;
        }
        if matches!(message, Message::Close(_)) {
            writer.shutdown().await?;
        }
        Ok::<_, WsError>(writer)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_and_events_carry_every_message_kind() {
        assert_eq!(decode_post(b"t{}").unwrap(), Message::text("{}"));
        assert_eq!(decode_post(b"b\x01\x02").unwrap(), Message::binary(vec![1, 2]));
        assert!(matches!(decode_post(b"p").unwrap(), Message::Pong(_)));
        assert!(decode_post(b"").is_err());
        assert!(decode_post(b"x").is_err());
        assert!(decode_post(b"t\xff").is_err());
        assert_eq!(encode_event(&Message::text("{\"a\":\n1}")).unwrap(), "data: teyJhIjoKMX0=\n\n");
        assert_eq!(encode_event(&Message::binary(vec![0])).unwrap(), "data: bAA==\n\n");
        assert!(encode_event(&Message::Pong(Default::default())).is_none());
    }

    #[tokio::test]
    async fn a_session_takes_posts_until_it_is_dropped() {
        use futures_util::StreamExt as _;
        let sessions = std::sync::Arc::new(Sessions::default());
        let (gone_tx, gone) = tokio::sync::oneshot::channel();
        let (name, mut inbound) = sessions.open(gone).unwrap();
        assert_eq!(name.len(), 32);
        assert_eq!(sessions.post(&name, Message::text("hi")), Posted::Queued);
        assert_eq!(inbound.next().await.unwrap().unwrap(), Message::text("hi"));
        for _ in 0..QUEUE {
            assert_eq!(sessions.post(&name, Message::text("x")), Posted::Queued);
        }
        assert_eq!(sessions.post(&name, Message::text("x")), Posted::Full);
        assert_eq!(sessions.post("nope", Message::text("x")), Posted::NoSession);
        // The client going away ends the stream.
        drop(gone_tx);
        assert!(inbound.next().await.is_none());
        drop(inbound);
        assert_eq!(sessions.post(&name, Message::text("x")), Posted::NoSession);
    }
}
