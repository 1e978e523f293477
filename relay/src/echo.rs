//! Echo mode, for the Autobahn conformance suite only: plain `ws://` on loopback, no TLS and no
//! authentication, every message sent back. It runs the relay's own WebSocket layer (the same
//! upgrade, the same `WebSocketConfig`), so the suite judges what the relay uses.

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::http::{read_head, switching_protocols};
use crate::server::{Limits, ws_config};

/// Echoes on `listener` until the task is dropped.
pub async fn serve_echo(listener: TcpListener, limits: Limits) -> std::io::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let limits = limits.clone();
        tokio::spawn(async move {
            if let Err(e) = echo(tcp, &limits).await {
                tracing::debug!("echo connection: {e}");
            }
        });
    }
}

async fn echo(mut tcp: TcpStream, limits: &Limits) -> Result<(), crate::server::ConnError> {
    let head = read_head(&mut tcp).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&head)?;
    let key = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|h| h.value)
        .ok_or(crate::server::ConnError::NotUpgrade)?;
    tcp.write_all(switching_protocols(key).as_bytes()).await?;
    let ws = WebSocketStream::from_raw_socket(tcp, Role::Server, Some(ws_config(limits))).await;
    let (mut sink, mut stream) = ws.split();
    while let Some(message) = stream.next().await {
        match message? {
            m @ (Message::Text(_) | Message::Binary(_)) => sink.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}
