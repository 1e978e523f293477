//! `remote pair LINK`: a new key for this profile, the hello that proves the link's secret,
//! and what the host's signed answer says, kept in the profile.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use protocol::{Message, PairingLink};
use remote::profile::{Pairing, Profile};
use remote::session::{Link, Session, Silence, now_ms};

use super::{print_json, role_name, this_machine};

pub(super) async fn pair(
    profile: &Profile,
    link: &str,
    name: Option<String>,
    force: bool,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let link: PairingLink = link.parse()?;
    if now_ms() >= link.expires_at_ms {
        anyhow::bail!("this pairing link has expired; ask for a new one (agent-host pair)");
    }
    if !force && profile.pairing().is_ok() {
        anyhow::bail!(
            "profile {} is already paired; use --force to replace it, or --profile NAME",
            profile.dir().display()
        );
    }
    let name = name.unwrap_or_else(|| format!("remote on {}", this_machine()));
    let (key, channel) = profile.new_key()?;
    let channel_key = Some(protocol::ChannelKey(protocol::channel::public_of(&channel)?));
    let me = key.public_key();
    let secret = link.pairing_secret();
    let token = protocol::pairing::token(&secret);
    let host = link.host.key();
    let proof = protocol::pairing::prove(&secret, &host, &me, &name);
    if !json {
        println!("this device: {}", protocol::DeviceId::new(me));
        println!("fingerprint: {}  (compare it with the host's question)", me.fingerprint());
        let _ = std::io::stdout().flush();
    }
    let session_link = Link {
        relay: link.relay.clone(),
        cert_sha256: link.cert_sha256,
        host,
        knock: Some((protocol::RelayKey::of(&host), token)),
        // The relay sees the token, never the secret, which keys this channel.
        channel: relay_client::ChannelSetup::Pairing {
            psk: protocol::pairing::channel_psk(&secret).into(),
        },
    };
    let mut session = Session::start(session_link, key, None, 0)?;
    session.send(&Message::Pairing(protocol::Pairing::Hello {
        token,
        name,
        proof,
        channel_key,
    }))?;
    // The person at the host has until the link lapses to answer, and at least the timeout.
    let wait = Duration::from_millis(link.expires_at_ms.saturating_sub(now_ms())).max(timeout);
    let deadline = Instant::now() + wait;
    loop {
        let message = match session.next(deadline).await {
            Ok(m) => m,
            Err(Silence::NoRoute) => anyhow::bail!(
                "the host has no open pairing offer for this link (used, burned, withdrawn or \
                 expired); ask for a new one"
            ),
            Err(e) => return Err(e.into()),
        };
        match message {
            Message::Pairing(protocol::Pairing::Accepted { role, host_name, channel_key }) => {
                let Some(channel_key) = channel_key else {
                    anyhow::bail!(
                        "the host did not give its channel key; not paired (upgrade the host, \
                         then pair again)"
                    );
                };
                if !protocol::channel::usable_public(&channel_key.0) {
                    anyhow::bail!(
                        "the host's channel key is not a usable X25519 key; not paired (the \
                         host may list this device: revoke it there)"
                    );
                }
                let pairing = Pairing {
                    host: link.host,
                    host_name: host_name.clone(),
                    relay: link.relay.clone(),
                    cert_sha256: link.cert_sha256.map(hex::encode),
                    role,
                    paired_at_ms: now_ms(),
                    host_channel_key: Some(channel_key),
                };
                profile.save_pairing(&pairing)?;
                // The host's next counters continue after the one of its answer.
                profile.update_counters(|c| c.received = 1)?;
                if json {
                    print_json(&pairing)?;
                } else {
                    println!("paired with {host_name} ({}) as {}", link.host, role_name(role));
                }
                return Ok(ExitCode::SUCCESS);
            }
            Message::Pairing(protocol::Pairing::Rejected { reason }) => {
                anyhow::bail!("the host refused the pairing: {reason}");
            }
            _ => {}
        }
    }
}
