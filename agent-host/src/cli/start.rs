//! Starting the host: its settings loaded and merged (the user's, the workspace's, trusted or
//! not, and those named on the command line), the relay it links through, and `serve` and `up`
//! run until a stop signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent_host::dirs::{self, Dirs};
use agent_host::policy::{Policy, Settings, Trust};

use super::{ServeArgs, UpArgs};

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

pub(super) fn daemon_config(
    dirs: &Dirs,
    args: &ServeArgs,
) -> anyhow::Result<agent_host::host::Config> {
    let workspace = match &args.workspace {
        Some(w) => w.canonicalize()?,
        None => std::env::current_dir()?.canonicalize()?,
    };
    let files = load_settings(dirs, &workspace, &args.settings)?;
    let policy = Policy::new(&workspace, files, args.mode, dirs.all());
    for note in policy.notes() {
        eprintln!("note: {note}");
    }
    let sandbox = agent_host::exec::Sandbox::choose(args.allow_unsandboxed)?;
    if sandbox == agent_host::exec::Sandbox::Unsandboxed {
        eprintln!(
            "WARNING: no sandbox can run here; commands will run UNSANDBOXED with your full rights."
        );
    }
    let host_name = match &args.host_name {
        Some(name) => name.clone(),
        None => rustix::system::uname().nodename().to_string_lossy().into_owned(),
    };
    let relay = match &args.relay {
        Some(relay) => {
            let mut setup = relay_setup(relay, args.relay_cert.as_deref())?;
            setup.page = args.page.as_deref().map(page_host).transpose()?;
            Some(setup)
        }
        None => None,
    };
    let cache = dirs.sandbox_cache_for(&workspace);
    let user = agent_host::userenv::UserEnv::from_host(&dirs.user_settings(), Some(cache))?;
    if let Some(refusal) = user.unfit(std::slice::from_ref(&workspace), &dirs.all()) {
        anyhow::bail!("{refusal}");
    }
    Ok(agent_host::host::Config {
        user,
        workspace,
        policy,
        sandbox,
        approval_timeout: args.approval_timeout,
        command_timeout: args.command_timeout,
        host_name,
        relay,
        two_person: args.two_person,
        push: agent_host::push::PushSetup {
            contact: args.push_contact.clone(),
            extra_roots: match &args.push_ca {
                Some(path) => read_roots(path)?,
                None => Vec::new(),
            },
            ntfy: args.ntfy.clone(),
            ack_wait: args.push_ack_wait,
            allow: args.push_allow.clone(),
        },
    })
}

/// The certificates of a PEM file, as DER.
fn read_roots(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.map(|c| c.map(|c| c.to_vec())).collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--push-ca {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "--push-ca {}: no certificate in it", path.display());
    Ok(certs)
}

/// The page's `host[:port]` from `--page` (an `https://` prefix and a trailing `/` are allowed).
fn page_host(page: &str) -> anyhow::Result<String> {
    let host = page.trim_start_matches("https://").trim_end_matches('/');
    anyhow::ensure!(
        protocol::link::plain_host(host),
        "--page is an https origin's HOST[:PORT], not {page}"
    );
    // As a browser writes an origin's host.
    Ok(host.to_ascii_lowercase())
}

/// How to reach a relay given as `HOST:PORT` (a `wss://` or `https://` prefix is allowed), or
/// several nodes of one, comma-separated (the link then names them all, and the relay client
/// moves to the next when one fails).
pub(super) fn relay_setup(
    relay: &str,
    cert: Option<&str>,
) -> anyhow::Result<agent_host::host::RelaySetup> {
    let mut nodes = Vec::new();
    for node in relay.split(',') {
        let node = node
            .trim()
            .trim_start_matches("wss://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let Some((host, port)) = node.rsplit_once(':') else {
            anyhow::bail!("the relay is HOST:PORT (or several, comma-separated), not {relay}");
        };
        if port.parse::<u16>().is_err() || host.is_empty() || !protocol::link::plain_host(node) {
            anyhow::bail!("the relay is HOST:PORT (or several, comma-separated), not {relay}");
        }
        nodes.push(node.to_string());
    }
    if nodes.len() > protocol::link::MAX_RELAYS {
        anyhow::bail!("at most {} relay nodes", protocol::link::MAX_RELAYS);
    }
    let addr = nodes.join(",");
    let first = nodes[0].rsplit_once(':').map_or(nodes[0].as_str(), |(h, _)| h);
    let server_name = first.trim_start_matches('[').trim_end_matches(']').to_string();
    let (tls, cert_sha256) = match cert {
        Some(hex_digest) => {
            let pin = protocol::relay::hex32(hex_digest, "certificate SHA-256")
                .map_err(|e| anyhow::anyhow!("--relay-cert: {e}"))?;
            (relay_client::pinned_config(pin), Some(pin))
        }
        None => (relay_client::system_roots_config()?, None),
    };
    Ok(agent_host::host::RelaySetup {
        public: addr.clone(),
        addr,
        server_name,
        tls,
        cert_sha256,
        local: None,
        page: None,
    })
}

/// Waits for Ctrl-C at the terminal, or SIGTERM from a service manager. The handlers are
/// installed when this is called, not when it is first awaited: a signal that comes as soon as
/// the host's socket appears must stop the host cleanly, not kill it.
pub(super) fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// Runs the daemon until a stop signal; `announce` runs once it is ready.
pub(super) async fn run_daemon(
    dirs: Dirs,
    config: agent_host::host::Config,
    announce: impl FnOnce(protocol::HostId),
) -> anyhow::Result<()> {
    let (ready, host) = tokio::sync::oneshot::channel();
    let announced = async {
        if let Ok(id) = host.await {
            announce(id);
        }
    };
    let (result, ()) = tokio::join!(
        agent_host::daemon::serve(dirs, config, Some(ready), stop_signal()),
        announced
    );
    Ok(result?)
}

pub(super) fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::discover()?;
    let config = daemon_config(&dirs, args)?;
    let workspace = config.workspace.clone();
    let socket = dirs::owner_socket(&dirs);
    runtime()?.block_on(run_daemon(dirs, config, |id| {
        println!("agent-host serving {} as {id}", workspace.display());
        println!("socket: {}", socket.display());
    }))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    if args.serve.relay.is_some() {
        anyhow::bail!(
            "`up` runs its own relay; to use another one, run `agent-host serve --relay`"
        );
    }
    let dirs = Dirs::discover()?;
    let mut config = daemon_config(&dirs, &args.serve)?;
    let workspace = config.workspace.clone();
    let socket = dirs::owner_socket(&dirs);
    let (role, yes, no_pair) = (args.role, args.yes, args.no_pair);
    runtime()?.block_on(async {
        let ip = if args.lan {
            super::up::lan_address()?
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        };
        let (relay, setup) =
            super::up::start_relay(&dirs, std::net::SocketAddr::new(ip, args.port)).await?;
        let pin = setup.cert_sha256.map(hex::encode).unwrap_or_default();
        let public = setup.public.clone();
        config.relay = Some(setup);
        let result = run_daemon(dirs, config, move |id| {
            println!("agent-host up: {} as {id}", workspace.display());
            println!("relay:  wss://{public} (self-signed certificate, SHA-256 {pin})");
            let how = if no_pair { "a link from `agent-host pair`" } else { "the link below" };
            println!("web:    https://{public}/ (a browser pairs by opening {how})");
            println!("socket: {}", socket.display());
            println!("approve here with `agent-host approvals` and `agent-host approve ID`; Ctrl-C stops.");
            if !no_pair {
                // The person's yes/no is read from this terminal, away from the host's threads.
                std::thread::spawn(move || {
                    match super::up::pair_at_terminal(&socket, role, None, 300, yes) {
                        Ok(true) => {}
                        Ok(false) => println!("pair a device later with `agent-host pair`"),
                        Err(e) => eprintln!("agent-host: pairing: {e:#}"),
                    }
                });
            }
        })
        .await;
        relay.shutdown().await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Loads every settings file that applies to `workspace`, trusted or not.
pub(crate) fn load_settings(
    dirs: &Dirs,
    workspace: &Path,
    extra: &[PathBuf],
) -> anyhow::Result<Vec<(Settings, Trust)>> {
    let mut files = Vec::new();
    let user = dirs.user_settings();
    if user.exists() {
        files.push((Settings::load(&user)?, Trust::Trusted));
    }
    let workspace_real = workspace.canonicalize().unwrap_or_else(|_| workspace.to_path_buf());
    let trust = if dirs::trusted(dirs)?.contains(&workspace_real) {
        Trust::Trusted
    } else {
        Trust::Untrusted
    };
    for name in ["settings.json", "settings.local.json"] {
        let path = workspace.join(".claude").join(name);
        if path.exists() {
            files.push((Settings::load(&path)?, trust));
        }
    }
    for path in extra {
        files.push((Settings::load(path)?, Trust::Trusted));
    }
    Ok(files)
}
