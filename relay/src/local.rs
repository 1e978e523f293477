//! A connection from the relay's own process: a host with its relay embedded (`agent-host
//! up`) reaches it without TLS and a socket, through two channels, and gets the same session
//! as any client ([`crate::Server::connect_local`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Messages in flight one way before the sender waits, as a socket's buffer would make it.
const CAPACITY: usize = 256;

/// Room for one message, being waited for.
type Reserving = Pin<Box<dyn Future<Output = Option<mpsc::OwnedPermit<Message>>> + Send>>;

/// The sending half of one side.
pub(crate) struct LocalSink {
    tx: Option<mpsc::Sender<Message>>,
    /// Room [`Sink::poll_ready`] waited for, for the next [`Sink::start_send`].
    room: Option<mpsc::OwnedPermit<Message>>,
    reserving: Option<Reserving>,
}

/// The receiving half of one side.
pub(crate) struct LocalStream(mpsc::Receiver<Message>);

/// Two connected ends: what one sends, the other receives; a sender waits while
/// [`CAPACITY`] messages wait to be received. Closing (or dropping) one ends the other's
/// stream.
pub(crate) fn pair() -> ((LocalSink, LocalStream), (LocalSink, LocalStream)) {
    let (a_tx, a_rx) = mpsc::channel(CAPACITY);
    let (b_tx, b_rx) = mpsc::channel(CAPACITY);
    let sink = |tx| LocalSink { tx: Some(tx), room: None, reserving: None };
    ((sink(a_tx), LocalStream(b_rx)), (sink(b_tx), LocalStream(a_rx)))
}

impl Sink<Message> for LocalSink {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.room.is_some() {
            return Poll::Ready(Ok(()));
        }
        let Some(tx) = self.tx.clone() else { return Poll::Ready(Err(WsError::ConnectionClosed)) };
        if self.reserving.is_none() {
            // Room now, as there is but for a reader that fell behind: no future to make.
            match tx.clone().try_reserve_owned() {
                Ok(room) => {
                    self.room = Some(room);
                    return Poll::Ready(Ok(()));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Poll::Ready(Err(WsError::ConnectionClosed));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        let reserving = self
            .reserving
            .get_or_insert_with(|| Box::pin(async move { tx.reserve_owned().await.ok() }));
        let room = std::task::ready!(reserving.as_mut().poll(cx));
        self.reserving = None;
        match room {
            Some(room) => {
                self.room = Some(room);
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Err(WsError::ConnectionClosed)),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        match self.room.take() {
            Some(room) => {
                room.send(message);
                Ok(())
            }
            // Not made ready first: sent only if there is room now.
            None => {
                let tx = self.tx.as_ref().ok_or(WsError::ConnectionClosed)?;
                tx.try_send(message).map_err(|_| WsError::ConnectionClosed)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        // Every sender gone, the other side's stream ends.
        self.tx = None;
        self.room = None;
        self.reserving = None;
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

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};

    use super::*;

    /// A sender waits while the other side has `CAPACITY` messages to take, and goes on once
    /// it takes one; closing ends the other side's stream after what was sent.
    #[tokio::test]
    async fn a_sender_waits_for_room_and_a_close_ends_the_stream() {
        let ((mut sink, _), (_, mut stream)) = pair();
        for i in 0..CAPACITY {
            sink.send(Message::text(i.to_string())).await.unwrap();
        }
        assert!(
            sink.send(Message::text("more")).now_or_never().is_none(),
            "sent past the capacity"
        );
        assert_eq!(stream.next().await.unwrap().unwrap(), Message::text("0"));
        sink.send(Message::text("more")).await.unwrap();
        sink.close().await.unwrap();
        let rest: Vec<_> = stream.map(Result::unwrap).collect().await;
        assert_eq!(rest.len(), CAPACITY);
        assert_eq!(rest.last(), Some(&Message::text("more")));
    }
}
