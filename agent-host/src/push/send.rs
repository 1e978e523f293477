//! How the host sends: its VAPID key and an HTTP client (ureq on rustls), set up as its owner
//! said ([`PushSetup`]). What it sends and when is `crate::notices`'s and the core's.
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

use super::{DEFAULT_CONTACT, PushError, VapidKey};

/// The most push and ntfy requests on their way at once.
pub const MAX_SENDING: usize = 8;
/// How long one request may take, all told.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
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
    /// Origins of push services besides the browsers' own that devices may name
    /// ([`super::Subscription::check_service`]).
    pub allow: Vec<String>,
}

/// The host's way to push: its VAPID key and an HTTP client.
pub struct Pusher {
    pub(crate) key: VapidKey,
    public_b64: String,
    pub(crate) contact: String,
    pub(crate) ntfy: Option<String>,
    pub(crate) agent: ureq::Agent,
    pub(crate) sending: Arc<tokio::sync::Semaphore>,
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
