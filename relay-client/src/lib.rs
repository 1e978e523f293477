//! The link from a host or a device to a relay.
//!
//! A TLS connection that trusts exactly one pinned certificate (by SHA-256, as a self-signed
//! relay's pairing link carries it; anything else is refused), the WebSocket upgrade, and
//! authentication by answering the relay's challenge ([`connect`], [`authenticate`]); on top,
//! [`Client`]: reconnection with jittered exponential backoff, re-registration of a host's
//! devices, end-to-end resume ([`resume`]: sequence numbers and acknowledgements per
//! direction) so each application message is delivered exactly once across drops and relay
//! restarts, and under it the end-to-end channel ([`channels`]) that seals every resume payload
//! between a host and a device, so that the relay reads none of them. Trust is either one pinned certificate ([`pinned_config`]) or the system's
//! certificate authorities ([`system_roots_config`]). Everything the client sends (messages,
//! resends after a reconnect, acknowledgements) is paced below a configured rate, so a backlog
//! never trips the relay's rate limit. It holds no policy and executes nothing.

#![forbid(unsafe_code)]

pub mod channels;
pub mod client;
/// End-to-end resume: sans-IO, kept in `protocol` beside the other wire formats.
pub use protocol::resume;

pub use channels::{ChannelSetup, Lane, SetupError};
pub use client::{Client, ClientConfig, Inbound, MAX_QUEUED_BYTES, Registration, SendError};

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::SecretKey;
use protocol::relay::{FromRelay, Side};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A WebSocket to the relay over TLS.
pub type Link = WebSocketStream<TlsStream<TcpStream>>;

/// Either direction of a connection to the relay, as WebSocket messages: a [`Link`], or a
/// connection within the relay's own process ([`LocalConnector`]).
pub trait Duplex:
    futures_util::Sink<Message, Error = WsError>
    + futures_util::Stream<Item = Result<Message, WsError>>
    + Send
    + Unpin
{
}

impl<T> Duplex for T where
    T: futures_util::Sink<Message, Error = WsError>
        + futures_util::Stream<Item = Result<Message, WsError>>
        + Send
        + Unpin
{
}

/// Opens a connection to a relay that runs in this same process (one a host embeds), instead
/// of one over TLS: the connection, and the SHA-256 of the certificate the relay presents to
/// everyone else, which the authentication is bound to as over TLS.
pub type LocalConnector = Arc<dyn Fn() -> (Box<dyn Duplex>, [u8; 32]) + Send + Sync>;

/// Why the link could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// TCP or TLS failed (including a certificate that is not the pinned one).
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    /// The WebSocket upgrade failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The relay did not follow the protocol.
    #[error("the relay did not follow the protocol: {0}")]
    Protocol(String),
    /// The relay closed the connection, with this code and reason.
    #[error("the relay closed the connection: {code} {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The reason.
        reason: String,
    },
}

/// Trusts exactly the certificate whose SHA-256 is pinned; verifies handshake signatures with
/// it as usual.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration that accepts only the certificate with this SHA-256.
pub fn pinned_config(sha256: [u8; 32]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { sha256, provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
    // The ring provider supports the safe default versions, so the builder cannot fail.
    Arc::new(config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")))
}

/// A TLS client configuration that trusts the operating system's certificate authorities, for
/// a relay with a public certificate. Fails if the system has none.
pub fn system_roots_config() -> Result<Arc<rustls::ClientConfig>, LinkError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(LinkError::Protocol("no system certificate authorities found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LinkError::Protocol(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `addr` (host:port) over TLS with `tls`, upgrades to a WebSocket on `/ws`, and
/// returns the link with the SHA-256 of the certificate the relay presented.
pub async fn connect(
    addr: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(Link, [u8; 32]), LinkError> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| LinkError::Protocol(format!("bad server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| LinkError::Protocol("no certificate".into()))?;
    let cert_sha256: [u8; 32] = Sha256::digest(cert.as_ref()).into();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://{server_name}/ws"), stream).await?;
    Ok((ws, cert_sha256))
}

/// Answers the relay's challenge as `secret` on `side`, and waits for the welcome.
pub async fn authenticate<L: Duplex + ?Sized>(
    link: &mut L,
    secret: &SecretKey,
    side: Side,
    cert_sha256: &[u8; 32],
) -> Result<(), LinkError> {
    let nonce = match next_control(link).await? {
        FromRelay::Challenge { nonce } => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(&nonce, &mut out)
                .map_err(|_| LinkError::Protocol("bad nonce".into()))?;
            out
        }
        other => return Err(LinkError::Protocol(format!("expected a challenge, got {other:?}"))),
    };
    let hello = protocol::relay::hello(secret, side, &nonce, cert_sha256);
    link.send(Message::text(
        serde_json::to_string(&hello).map_err(|e| LinkError::Protocol(e.to_string()))?,
    ))
    .await?;
    match next_control(link).await? {
        FromRelay::Welcome => Ok(()),
        other => Err(LinkError::Protocol(format!("expected a welcome, got {other:?}"))),
    }
}

/// The next control message from the relay (skipping pings).
pub async fn next_control<L: Duplex + ?Sized>(link: &mut L) -> Result<FromRelay, LinkError> {
    loop {
        match link.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| LinkError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) =
                    frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                return Err(LinkError::Closed { code, reason });
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(LinkError::Protocol("data before authentication".into()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(LinkError::Closed {
                    code: protocol::relay::CloseCode::Abnormal.code(),
                    reason: "connection lost".into(),
                });
            }
        }
    }
}
