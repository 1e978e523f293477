//! Sending: the pushes the core asks for ([`crate::host_core::Effect::Push`]), and the
//! content-free "needs you" to an ntfy-style topic, over HTTPS with ureq on rustls.
//!
//! A push says what waits as a [`HostEvent::Notice`] sealed to the device, lapsing with the
//! last action it names; the device's role says whether it gets buttons, its subscription
//! whether the notice names the actions. The push service's answer goes back to the core
//! ([`crate::host_core::HostCore::pushed`]): 201 (or any 2xx) taken, 404 and 410 the end of the
//! subscription, anything else a failure to try again. Redirects are not followed.
//!
//! Bounded: the core keeps at most one push on its way per device, and the host at most
//! [`MAX_SENDING`] requests at once; an ntfy post that finds every slot taken is dropped (and
//! said so).

use std::sync::Arc;
use std::time::Duration;

use base64_simd::URL_SAFE_NO_PAD as B64;
use protocol::{DeviceId, HostEvent, Message, NoticeAction, RequestId, Role};

use super::{DEFAULT_CONTACT, MAX_PAYLOAD, PushError, Subscription, VapidKey};
use crate::approvals::Pending;
use crate::host::{Host, lock};
use crate::host_core::PushOutcome;

/// The most push and ntfy requests on their way at once.
pub const MAX_SENDING: usize = 8;
/// How long one request may take, all told.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest summary a notice quotes, in characters.
const MAX_SUMMARY: usize = 160;
/// The longest name of who asked, in characters.
const MAX_NAME: usize = 60;
/// What an ntfy-style topic is told: nothing about the action.
pub const NTFY_BODY: &str = "An action needs you (agent-bridge)";

/// How the host pushes, as its owner set it up.
#[derive(Debug, Clone, Default)]
pub struct PushSetup {
    /// The contact the VAPID token names (`mailto:` or `https:`); a placeholder when `None`.
    pub contact: Option<String>,
    /// Certificate authorities trusted for push services besides the system's (DER): a push
    /// service of your own.
    pub extra_roots: Vec<Vec<u8>>,
    /// An ntfy-style topic URL that gets a content-free post for each action that starts to
    /// wait.
    pub ntfy: Option<String>,
    /// How long a device has to acknowledge a push before it is pushed again.
    pub ack_wait: Option<Duration>,
}

/// The host's way to push: its VAPID key and an HTTP client.
pub struct Pusher {
    key: VapidKey,
    public_b64: String,
    contact: String,
    ntfy: Option<String>,
    agent: ureq::Agent,
    sending: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").field("key", &self.key).field("ntfy", &self.ntfy).finish()
    }
}

impl Pusher {
    /// A pusher with `key`, set up as `setup` says; trusts the system's certificate
    /// authorities and `setup`'s.
    pub fn new(key: VapidKey, setup: &PushSetup) -> Result<Self, PushError> {
        let contact = setup.contact.clone().unwrap_or_else(|| DEFAULT_CONTACT.into());
        if !(contact.starts_with("mailto:") || contact.starts_with("https:")) {
            return Err(PushError::Contact);
        }
        let native = rustls_native_certs::load_native_certs();
        let roots: Vec<ureq::tls::Certificate<'static>> = native
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .chain(
                setup
                    .extra_roots
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der).to_owned()),
            )
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        let public_b64 = B64.encode_to_string(key.public_key());
        Ok(Self {
            key,
            public_b64,
            contact,
            ntfy: setup.ntfy.clone(),
            agent,
            sending: Arc::new(tokio::sync::Semaphore::new(MAX_SENDING)),
        })
    }

    /// The VAPID public key, base64url: what a page subscribes with.
    pub fn public_key(&self) -> &str {
        &self.public_b64
    }
}

/// What a notice of `pending` (oldest first) says to a device of `role`: the newest first,
/// none of them when it hides detail.
pub fn notice(host: &Host, role: Role, hide_detail: bool, pending: &[Pending]) -> HostEvent {
    let cut = |text: &str, most: usize| {
        let mut out: String = text.chars().take(most).collect();
        if text.chars().count() > most {
            out.push('…');
        }
        out
    };
    let actions = if hide_detail {
        Vec::new()
    } else {
        pending
            .iter()
            .rev()
            .take(protocol::limits::MAX_NOTICE_ACTIONS)
            .map(|p| NoticeAction {
                request: p.id,
                action_hash: p.action_hash,
                summary: cut(&p.summary, MAX_SUMMARY),
                requested_by: cut(&asker(host, &p.requested_by), MAX_NAME),
                expires_at_ms: p.expires_at_ms,
            })
            .collect()
    };
    HostEvent::Notice {
        host_name: cut(&host.config.host_name, MAX_NAME),
        waiting: u32::try_from(pending.len()).unwrap_or(u32::MAX),
        actions,
        can_decide: role >= Role::Approver,
    }
}

/// Who asked, as a notification names them: a device by its name, else its id; the terminal or
/// an agent's hook by what it is.
fn asker(host: &Host, who: &crate::approvals::Requester) -> String {
    match host.actor(who) {
        protocol::Actor::Device { name: Some(name), .. } => name,
        protocol::Actor::Device { id, .. } => id.to_string(),
        protocol::Actor::Local { name } => name,
    }
}

/// What a push carries: `notice` sealed to `device`, lapsing at `expires_at_ms`, as base64url
/// text; actions are left out, the oldest named first, until it fits.
fn payload(
    host: &Host,
    device: &DeviceId,
    mut notice: HostEvent,
    expires_at_ms: u64,
) -> Option<Vec<u8>> {
    loop {
        let message = Message::Event(notice.clone());
        let frame = crate::link::seal_until(host, &device.key(), &message, expires_at_ms)?;
        let text = B64.encode_to_string(&frame).into_bytes();
        if text.len() <= MAX_PAYLOAD {
            return Some(text);
        }
        let HostEvent::Notice { actions, .. } = &mut notice else { return None };
        actions.pop()?;
    }
}

/// Pushes what waits (`pending`) to `device`, for the core's [`crate::host_core::Effect::Push`]:
/// what becomes of it goes back to the core. What cannot even be sent is told at once.
pub(crate) fn push(
    host: &Arc<Host>,
    device: DeviceId,
    pending: Vec<Pending>,
) -> Result<(), PushOutcome> {
    let Some(pusher) = &host.pusher else {
        return Err(PushOutcome::Gone("this host does not push".into()));
    };
    let (role, subscription) = {
        let devices = lock(&host.devices);
        let d = devices.get(&device).ok_or_else(|| PushOutcome::Gone("not paired".into()))?;
        (d.role, d.push.clone().ok_or_else(|| PushOutcome::Gone("no subscription".into()))?)
    };
    let target =
        Subscription::from_wire(&subscription).map_err(|e| PushOutcome::Gone(e.to_string()))?;
    let notice = notice(host, role, subscription.hide_detail, &pending);
    let expires = pending.iter().map(|p| p.expires_at_ms).max().unwrap_or_default();
    let body = payload(host, &device, notice, expires)
        .ok_or_else(|| PushOutcome::Failed("the notice could not be sealed".into()))?;
    let request = super::request(&pusher.key, &target, &pusher.contact, &body)
        .map_err(|e| PushOutcome::Failed(e.to_string()))?;
    let requests: Vec<RequestId> = pending.iter().map(|p| p.id).collect();
    let (agent, sending, host) = (pusher.agent.clone(), pusher.sending.clone(), host.clone());
    tokio::spawn(async move {
        let outcome = match sending.acquire_owned().await {
            Ok(permit) => {
                let sent = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    agent.run(request).map(|r| r.status())
                })
                .await;
                match sent {
                    Ok(Ok(status)) if status.is_success() => PushOutcome::Taken,
                    Ok(Ok(status)) if status.as_u16() == 404 || status.as_u16() == 410 => {
                        PushOutcome::Gone(format!("HTTP {status}"))
                    }
                    Ok(Ok(status)) => {
                        PushOutcome::Failed(format!("the push service answered HTTP {status}"))
                    }
                    Ok(Err(e)) => PushOutcome::Failed(e.to_string()),
                    Err(e) => PushOutcome::Failed(e.to_string()),
                }
            }
            Err(_) => return,
        };
        let _ = host.core.pushed(device, requests, outcome).await;
    });
    Ok(())
}

/// Posts the content-free "needs you" to the ntfy-style topic, if the host has one.
pub(crate) fn ntfy(host: &Host) {
    let Some(pusher) = &host.pusher else { return };
    let Some(url) = pusher.ntfy.clone() else { return };
    let Ok(permit) = pusher.sending.clone().try_acquire_owned() else {
        tracing::warn!("ntfy: {MAX_SENDING} requests are on their way; this one is dropped");
        return;
    };
    let agent = pusher.agent.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match agent.post(&url).send(NTFY_BODY) {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!("ntfy: {url} answered HTTP {}", r.status()),
            Err(e) => tracing::warn!("ntfy: {url}: {e}"),
        }
    });
}
