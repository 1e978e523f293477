//! One connection's HTTP side: the TLS handshake, one request head (at most 8 KiB), and what
//! it asks for: `/health`, `/metrics`, the WebSocket upgrade (`/ws`) or the event stream
//! (`/sse`, [`crate::sse`]) into a session ([`crate::server`]), an event stream's POST, or a
//! file of the web UI when the relay serves it ([`crate::web`]).
//!
//! It must not route or authenticate: a session does, once the connection is one.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::metrics::Metrics;
use crate::server::{ConnError, Inner, session, ws_config};

pub(crate) async fn connection(
    inner: &Arc<Inner>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    open: usize,
) -> Result<(), ConnError> {
    let limits = &inner.config.limits;
    let _ = tcp.set_nodelay(true);
    let mut tls = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await??;
    let head = tokio::time::timeout(limits.handshake_timeout, read_head(&mut tls)).await??;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(n)) if n == head.len()) {
        return respond(&mut tls, "400 Bad Request", "bad request\n").await;
    }
    let header = |name: &str| {
        request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    };
    match (request.method, request.path) {
        (Some("GET"), Some("/health")) => respond(&mut tls, "200 OK", "ok\n").await,
        (Some("GET"), Some("/metrics")) => {
            respond(&mut tls, "200 OK", &inner.metrics.render()).await
        }
        (Some("GET"), Some("/ws")) => {
            let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
            let Some(key) = header("sec-websocket-key").filter(|_| upgrade) else {
                return respond(&mut tls, "400 Bad Request", "expected a WebSocket upgrade\n")
                    .await;
            };
            if open > limits.max_connections {
                Metrics::inc(&inner.metrics.limit_closes);
                return respond(&mut tls, "503 Service Unavailable", "too many connections\n")
                    .await;
            }
            tls.write_all(switching_protocols(key).as_bytes()).await?;
            let ws =
                WebSocketStream::from_raw_socket(tls, Role::Server, Some(ws_config(limits))).await;
            session(inner, ws).await
        }
        (Some("GET"), Some("/sse")) => {
            if open > limits.max_connections {
                Metrics::inc(&inner.metrics.limit_closes);
                return respond(&mut tls, "503 Service Unavailable", "too many connections\n")
                    .await;
            }
            // What the client posts comes in through `inbound`; on this connection it only
            // reads, and the session ends when the client closes it.
            let (gone_tx, gone) = tokio::sync::oneshot::channel();
            let (name, inbound) = inner.sse.open(gone)?;
            tls.write_all(crate::sse::STREAM_HEAD.as_bytes()).await?;
            tls.write_all(format!("data: s{name}\n\n").as_bytes()).await?;
            tls.flush().await?;
            let (mut reader, writer) = tokio::io::split(tls);
            let watch = tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
                drop(gone_tx);
            });
            let sink = crate::sse::event_sink(writer);
            let result = session(inner, crate::server::Joined(sink, inbound)).await;
            watch.abort();
            result
        }
        (Some("POST"), Some(path)) if path.starts_with("/sse/") => {
            let length = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            let Some(length) = length else {
                return respond_cors(&mut tls, "411 Length Required", "a length is required\n")
                    .await;
            };
            if length > limits.max_frame + 1 {
                return respond_cors(&mut tls, "413 Content Too Large", "over the frame limit\n")
                    .await;
            }
            let mut body = vec![0; length];
            tokio::time::timeout(limits.handshake_timeout, tls.read_exact(&mut body)).await??;
            let message = match crate::sse::decode_post(&body) {
                Ok(m) => m,
                Err(e) => {
                    return respond_cors(&mut tls, "400 Bad Request", &format!("{e}\n")).await;
                }
            };
            match inner.sse.post(&path["/sse/".len()..], message) {
                crate::sse::Posted::Queued => respond_cors(&mut tls, "204 No Content", "").await,
                crate::sse::Posted::NoSession => {
                    respond_cors(&mut tls, "404 Not Found", "no such session\n").await
                }
                crate::sse::Posted::Full => {
                    respond_cors(&mut tls, "429 Too Many Requests", "the session's queue is full\n")
                        .await
                }
            }
        }
        (Some("GET"), Some(path)) if inner.config.serve_web => match crate::web::file(path) {
            Some(file) => {
                let host = header("host").and_then(crate::web::plain_host);
                tls.write_all(crate::web::head(&file, host).as_bytes()).await?;
                tls.write_all(&file.body).await?;
                tls.shutdown().await?;
                Ok(())
            }
            None => respond(&mut tls, "404 Not Found", "not found\n").await,
        },
        _ => respond(&mut tls, "404 Not Found", "not found\n").await,
    }
}

/// The 101 answer to a WebSocket upgrade with this `Sec-WebSocket-Key`.
pub(crate) fn switching_protocols(key: &[u8]) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Reads an HTTP request head (through the blank line), at most 8 KiB.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ConnError> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 8192 {
            return Err(ConnError::Head("request head over 8 KiB"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(ConnError::Head("closed during the request head"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
) -> Result<(), ConnError> {
    respond_with(stream, status, body, "").await
}

/// [`respond`] to an event stream's POST, which any page may read ([`crate::sse::STREAM_HEAD`]).
async fn respond_cors<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
) -> Result<(), ConnError> {
    respond_with(stream, status, body, "Access-Control-Allow-Origin: *\r\n").await
}

async fn respond_with<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
    headers: &str,
) -> Result<(), ConnError> {
    let content_type =
        if body.starts_with("# HELP") { "text/plain; version=0.0.4" } else { "text/plain" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
