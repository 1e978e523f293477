//! `agent-host up`: the host for the current directory with an embedded relay, on loopback or
//! (`--lan`) on this machine's LAN address, with a self-signed certificate that pairing links
//! pin by its SHA-256. The certificate and its key are kept in the host's config directory
//! (`relay-cert.pem`, `relay-key.pem`, mode 0600), so paired devices still recognise the relay
//! after a restart; delete both to make a new one (and pair again).
//!
//! The embedded relay is the `relay` crate's server, unchanged: the host talks to it through
//! `relay-client` over TLS like any remote relay, and trusts it with nothing.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use protocol::Role;

use agent_host::devices::role_name;
use agent_host::dirs::Dirs;
use agent_host::host::RelaySetup;
use agent_host::local_api::{ApiRequest, ApiResponse, PairAnswer};

/// This machine's address on its LAN: the source address of the default route (found without
/// sending anything).
pub(crate) fn lan_address() -> anyhow::Result<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // Connecting a UDP socket sends nothing; it only picks the route and the source address.
    socket
        .connect("192.0.2.1:9")
        .map_err(|e| anyhow::anyhow!("no route to a LAN: {e}; use loopback (without --lan)"))?;
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        anyhow::bail!("this machine has no LAN address; use loopback (without --lan)");
    }
    Ok(ip)
}

/// The embedded relay's identity: the kept certificate, or a new one kept for next time.
pub(crate) fn relay_identity(
    dirs: &Dirs,
    names: Vec<String>,
) -> anyhow::Result<relay::tls::Identity> {
    let (cert, key) = (dirs.config.join("relay-cert.pem"), dirs.config.join("relay-key.pem"));
    if !(cert.exists() && key.exists()) {
        let (cert_pem, key_pem) = relay::tls::self_signed_pem(names)?;
        std::fs::create_dir_all(&dirs.config)?;
        agent_host::fsutil::write_atomic(&key, key_pem.as_bytes(), 0o600)?;
        agent_host::fsutil::write_atomic(&cert, cert_pem.as_bytes(), 0o644)?;
    }
    Ok(relay::tls::from_pem_files(&cert, &key)?)
}

/// Starts the embedded relay on `listen`; returns it and how the host reaches it.
pub(crate) async fn start_relay(
    dirs: &Dirs,
    listen: SocketAddr,
) -> anyhow::Result<(relay::Server, RelaySetup)> {
    let names = vec!["localhost".to_string(), listen.ip().to_string()];
    let identity = relay_identity(dirs, names)?;
    let pin = identity.cert_sha256;
    let server = relay::Server::bind(relay::Config {
        listen,
        identity,
        limits: relay::Limits::default(),
        // Self-signed: a browser binds its answer to the certificate hash from the link.
        origins: Vec::new(),
        // The person's own machine: the one relay whose page they may trust with a key.
        serve_web: true,
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (another `up`? try --port)"))?;
    let addr = server.local_addr();
    let serving = server.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve().await {
            tracing::error!("embedded relay: {e}");
        }
    });
    // The host itself reaches its relay within the process: the same session, without TLS
    // and two more trips through the kernel for each message.
    let embedded = server.clone();
    let local: relay_client::LocalConnector = Arc::new(move || {
        (Box::new(embedded.connect_local()) as Box<dyn relay_client::Duplex>, pin)
    });
    let setup = RelaySetup {
        addr: addr.to_string(),
        server_name: "localhost".into(),
        tls: relay_client::pinned_config(pin),
        cert_sha256: Some(pin),
        public: addr.to_string(),
        page: None,
        local: Some(local),
    };
    Ok((server, setup))
}

/// What to print for a pairing link: a QR code for a phone's camera, and the link itself.
pub(crate) fn qr_code(link: &str) -> String {
    match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// Opens a pairing offer at the host listening on `socket` and sees it through at this
/// terminal: prints the QR code and the link, asks the yes/no on stdin (unless `yes`), prints
/// the outcome, and for a link that pins a self-signed relay, what a browser will show. Returns
/// whether a device was paired.
pub(crate) fn pair_at_terminal(
    socket: &Path,
    role: Role,
    name: Option<String>,
    expires_secs: u64,
    yes: bool,
) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let request = ApiRequest::Pair { role, name, expires_secs, yes };
    let mut paired = false;
    let mut failure = None;
    runtime.block_on(agent_host::local_api::converse(
        socket,
        &request,
        |response| match response {
            ApiResponse::PairLink { link, expires_at_ms } => {
                let left = expires_at_ms.saturating_sub(agent_host::host::now_ms()) / 1000;
                println!("{}", qr_code(link));
                println!(
                    "Pair a device as {} (the link works once, for {left} s):",
                    role_name(role)
                );
                println!("  {link}");
                println!("  with the command line: remote pair '{link}'");
                if let Some(pin) =
                    link.parse::<protocol::link::PairingLink>().ok().and_then(|l| l.cert_sha256)
                {
                    println!("{}", self_signed_advice(&pin));
                }
                let _ = std::io::stdout().flush();
                None
            }
            ApiResponse::PairConfirm { device, name, fingerprint, role } => {
                println!(
                    "pair \"{name}\", fingerprint {fingerprint} ({device}), as {}?",
                    role_name(*role)
                );
                print!("[y/N] ");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                let accept = std::io::stdin().lock().read_line(&mut line).is_ok()
                    && matches!(line.trim(), "y" | "Y" | "yes" | "Yes");
                Some(PairAnswer { accept })
            }
            ApiResponse::Paired { device, name, role } => {
                println!("paired \"{name}\" ({device}) as {}", role_name(*role));
                paired = true;
                None
            }
            ApiResponse::PairFailed { reason } => {
                failure = Some(reason.clone());
                None
            }
            ApiResponse::Error { message } => {
                failure = Some(message.clone());
                None
            }
            _ => None,
        },
    ))?;
    if let Some(reason) = failure {
        eprintln!("not paired: {reason}");
    }
    Ok(paired)
}

/// What a person opening the link in a browser will see with a self-signed relay, and what to
/// check before going past the warning.
pub(crate) fn self_signed_advice(pin: &[u8; 32]) -> String {
    let pairs: Vec<String> = pin.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "  In a browser: the relay's certificate is self-signed, so the browser warns before it \
         shows the page\n  (\"Your connection is not private\" or similar). Open the warning's \
         certificate details and compare\n  its SHA-256 fingerprint with this one (the link's \
         `cert=`):\n      {}\n      {}\n  If it matches, go on (\"Advanced\", then \"Proceed\"). If \
         it differs, stop: another server answered,\n  and the page it serves could pair in your \
         name. Once paired, the page can only ask: every request is\n  signed by a key that never \
         leaves the browser, the host judges each one, and it answers only with\n  messages signed \
         by its own key.",
        pairs[..16].join(" "),
        pairs[16..].join(" ")
    )
}
