//! `relay`: parses flags, sets up logging, runs the server until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The bridge's relay: routes signed frames between hosts and the devices they paired, and
/// can read none of them.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about)]
struct Args {
    /// Address and port to listen on (one TLS port for the web UI, /ws, /sse, /health and
    /// /metrics).
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM). Needs --key.
    #[arg(long, env = "RELAY_CERT", requires = "key", conflicts_with = "self_signed")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "RELAY_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Make a self-signed certificate for these names (and print its SHA-256 fingerprint for
    /// clients to pin). Repeat for several names; default: localhost and 127.0.0.1.
    #[arg(long, num_args = 0.., value_name = "NAME")]
    self_signed: Option<Vec<String>>,
    /// An origin the relay serves browsers at (`https://relay.example.com`), whose binding it
    /// accepts in a challenge answer from a browser, which cannot see the certificate
    /// (repeatable; comma-separated in the variable).
    #[arg(long = "origin", env = "RELAY_ORIGIN", value_delimiter = ',', value_name = "URL")]
    origins: Vec<String>,
    /// Serve the web UI at `/` too. Off by default: the page holds a browser device's key, so
    /// whoever serves it can sign for that device; serve it only from a relay its users trust
    /// as they trust their own machine (SECURITY.md).
    #[arg(long, env = "RELAY_SERVE_WEB")]
    serve_web: bool,
    /// Largest frame a client may send, in bytes.
    #[arg(long, env = "RELAY_MAX_FRAME")]
    max_frame: Option<usize>,
    /// Bytes queued towards one connection before it is cut off as too slow.
    #[arg(long, env = "RELAY_MAX_QUEUED")]
    max_queued: Option<usize>,
    /// Data frames per second one device's connection may send (a burst of twice that).
    #[arg(long, env = "RELAY_RATE")]
    rate: Option<u32>,
    /// The most data frames per second one host's connection may send (a burst of twice
    /// that): a host may send `--rate` for each device it registered, up to this (and never
    /// less than `--rate`). Five times `--rate` unless given.
    #[arg(long, env = "RELAY_HOST_RATE")]
    host_rate: Option<u32>,
    /// Connections open at once.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds without any frame before a connection is closed.
    #[arg(long, env = "RELAY_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Share routing with other relay nodes through NATS (`nats://127.0.0.1:4222`): hosts and
    /// devices may then connect to any node. The NATS server must take messages as large as
    /// a frame (`max_payload: 8MB` in its configuration).
    #[arg(long, env = "RELAY_CLUSTER", value_name = "URL")]
    cluster: Option<String>,
    /// For conformance tests only: serve plain ws:// on this address, without TLS or
    /// authentication, echoing every message (the relay's WebSocket layer, for Autobahn).
    #[arg(long, value_name = "ADDR")]
    echo: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.echo {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("echo on ws://{}", listener.local_addr()?);
            relay::echo::serve_echo(
                listener,
                relay::Limits { max_frame: 16 << 20, ..relay::Limits::default() },
            )
            .await?;
            Ok(())
        });
    }
    let identity = match (&args.cert, &args.key, &args.self_signed) {
        (Some(cert), Some(key), _) => relay::tls::from_pem_files(cert, key)?,
        (None, None, Some(names)) => {
            let names = if names.is_empty() {
                vec!["localhost".into(), "127.0.0.1".into()]
            } else {
                names.clone()
            };
            let identity = relay::tls::self_signed(names)?;
            println!("self-signed certificate, SHA-256 {}", hex::encode(identity.cert_sha256));
            identity
        }
        _ => anyhow::bail!("give --cert and --key, or --self-signed"),
    };
    let mut limits = relay::Limits::default();
    if let Some(v) = args.max_frame {
        limits.max_frame = v;
    }
    if let Some(v) = args.max_queued {
        limits.max_queued = v;
    }
    if let Some(v) = args.rate {
        limits.frames_per_sec = v;
        limits.burst = v.saturating_mul(2);
        limits.host_frames_per_sec = v.saturating_mul(5);
        limits.host_burst = v.saturating_mul(10);
    }
    if let Some(v) = args.host_rate {
        limits.host_frames_per_sec = v;
        limits.host_burst = v.saturating_mul(2);
    }
    if let Some(v) = args.max_connections {
        limits.max_connections = v;
    }
    if let Some(v) = args.idle_timeout {
        limits.idle_timeout = Duration::from_secs(v);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = relay::Server::bind(relay::Config {
            listen: args.listen,
            identity,
            limits,
            origins: args.origins,
            serve_web: args.serve_web,
        })
        .await?;
        if let Some(url) = &args.cluster {
            server.join_cluster(url).await?;
        }
        tracing::info!(addr = %server.local_addr(), web_ui = args.serve_web, "relay listening");
        let serving = server.clone();
        let task = tokio::spawn(async move { serving.serve().await });
        // Ctrl-C at the terminal, or SIGTERM from a service manager: drain and stop.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        server.shutdown().await;
        task.abort();
        Ok(())
    })
}
