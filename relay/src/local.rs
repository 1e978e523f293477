//! A connection from the relay's own process: a host with its relay embedded (`agent-host
//! up`) reaches it without TLS and a socket, through two channels, and gets the same session
//! as any client ([`crate::Server::connect_local`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The sending half of one side.
pub(crate) struct LocalSink(Option<mpsc::UnboundedSender<Message>>);

/// The receiving half of one side.
pub(crate) struct LocalStream(mpsc::UnboundedReceiver<Message>);

/// Two connected ends: what one sends, the other receives. Closing (or dropping) one ends
/// the other's stream.
pub(crate) fn pair() -> ((LocalSink, LocalStream), (LocalSink, LocalStream)) {
    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    ((LocalSink(Some(a_tx)), LocalStream(b_rx)), (LocalSink(Some(b_tx)), LocalStream(a_rx)))
}

impl Sink<Message> for LocalSink {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let open = self.0.as_ref().is_some_and(|tx| !tx.is_closed());
        Poll::Ready(if open { Ok(()) } else { Err(WsError::ConnectionClosed) })
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let tx = self.0.as_ref().ok_or(WsError::ConnectionClosed)?;
        tx.send(message).map_err(|_| WsError::ConnectionClosed)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.0 = None;
        Poll::Ready(Ok(()))
    }
}

impl Stream for LocalStream {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|m| m.map(Ok))
    }
}

/// A client's end of a connection from the relay's own process: WebSocket messages both
/// ways, as over TLS.
pub struct LocalConn {
    sink: LocalSink,
    stream: LocalStream,
}

impl LocalConn {
    pub(crate) fn new((sink, stream): (LocalSink, LocalStream)) -> Self {
        Self { sink, stream }
    }
}

impl Sink<Message> for LocalConn {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        Pin::new(&mut self.sink).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

impl Stream for LocalConn {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}
