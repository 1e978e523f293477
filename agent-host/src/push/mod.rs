//! Web Push from the host, without I/O: the host's VAPID key, a browser's push subscription as
//! the host accepts it, what a notification says, and the request that carries it — RFC 8030
//! delivery, the payload encrypted to the browser's subscription keys as RFC 8291 says
//! (`aes128gcm`), signed for the push service as RFC 8292 says (VAPID) — through
//! `web-push-native` (RustCrypto's P-256, HKDF and AES-GCM; `jwt-simple` for the token).
//!
//! The push service sees the endpoint, the VAPID key and token, sizes and timing: never what a
//! notification says. An endpoint must be `https` with no credentials in it (the host makes a
//! request to whatever a device names, so nothing else is taken).
//!
//! A browser's subscription reaches the host inside its device's signed and encrypted channel
//! ([`protocol::Request::Push`]); what the host pushes and when is the core's
//! (`crate::host_core`, delivery), what it says `crate::notices`'s, the sending [`Pusher`]'s.
//!
//! Decisions: the VAPID key is the host's own (`config/vapid.key`, like its other keys), so
//! a push service can tie pushes to one host and nothing more; the token's `sub` is a contact
//! the host's owner may set (`mailto:` or `https:`), a placeholder otherwise. What a push
//! carries is a [`protocol::HostEvent::Notice`] sealed to the device like every event (so a
//! push service that could read it still could not forge one), as base64url text, kept under
//! 3,993 bytes, the most every push service takes.

use std::path::Path;
use std::time::Duration;

use web_push_native::jwt_simple;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ES256KeyPair,
};
use web_push_native::p256;

use crate::identity::IdentityError;

mod send;
pub use send::{MAX_SENDING, NTFY_BODY, PushSetup, Pusher, REQUEST_TIMEOUT};

/// The most plaintext one push carries: the 4,096 bytes every push service takes (RFC 8030,
/// section 7.2) less the `aes128gcm` header with its 65-byte key (86 bytes), the padding
/// delimiter and the tag (17).
pub const MAX_PAYLOAD: usize = 4096 - 86 - 17;
/// The longest endpoint taken.
pub const MAX_ENDPOINT: usize = 2048;
/// How long a push service keeps a push for a browser that is away: a pending action lapses
/// in minutes, so an hour is plenty.
pub const TTL: Duration = Duration::from_secs(60 * 60);
/// The contact named in the VAPID token when the owner set none.
pub const DEFAULT_CONTACT: &str = "mailto:agent-host@localhost.invalid";

/// The push services of the browsers people use: an endpoint must be on one of these hosts (on
/// port 443), or on an origin the host's owner allowed (`--push-allow`). A device names the
/// endpoint and the host posts to it, so the list is what keeps a device from making the host
/// post to anything else (a service on its network, its loopback).
pub const PUSH_SERVICES: &[&str] = &[
    // Chrome, and the browsers built on Chromium but Edge on Windows.
    "fcm.googleapis.com",
    // Firefox.
    "updates.push.services.mozilla.com",
    // Safari.
    "web.push.apple.com",
];
/// Microsoft's push service (Edge on Windows): hosts under this name.
pub const PUSH_SERVICE_DOMAIN: &str = ".notify.windows.com";

/// Why a push could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The VAPID key file.
    #[error(transparent)]
    Key(#[from] IdentityError),
    /// The key file holds bytes that are not a P-256 private key.
    #[error("the VAPID key is not a P-256 private key")]
    NotAKey,
    /// A subscription's endpoint is not one the host posts to.
    #[error(
        "a push endpoint must be an https URL without credentials, at most {MAX_ENDPOINT} bytes: {0}"
    )]
    Endpoint(String),
    /// A subscription's endpoint is not at a known push service nor at one the owner allowed.
    #[error(
        "{0} is not a push service this host knows; its owner may allow it with --push-allow {0}"
    )]
    NotAllowed(String),
    /// A subscription's keys are not a P-256 public key and a 16-byte secret.
    #[error("a push subscription's keys are malformed: {0}")]
    Keys(&'static str),
    /// The payload is over [`MAX_PAYLOAD`].
    #[error("a push payload of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// The contact for the push service is neither `mailto:` nor `https:`.
    #[error("the push contact must start with mailto: or https:")]
    Contact,
    /// Encryption or signing failed.
    #[error("the push could not be made: {0}")]
    Crypto(String),
}

/// The host's VAPID key (P-256).
pub struct VapidKey {
    pair: ES256KeyPair,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public", &hex::encode(self.public_key())).finish()
    }
}

impl VapidKey {
    /// Loads the key at `path`, or makes one there (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, PushError> {
        let secret = crate::identity::load_or_create_secret(path)?;
        Self::from_bytes(&secret)
    }

    /// The key whose private scalar is `bytes` (big-endian).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PushError> {
        ES256KeyPair::from_bytes(bytes).map(|pair| Self { pair }).map_err(|_| PushError::NotAKey)
    }

    /// The public key, uncompressed (65 bytes): the page's `applicationServerKey`.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().public_key().to_bytes_uncompressed()
    }
}

/// A browser's push subscription, as the host takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    endpoint: http::Uri,
    p256dh: p256::PublicKey,
    auth: [u8; 16],
}

impl Subscription {
    /// Checks a subscription as `PushSubscription` gives it: the endpoint URL, the browser's
    /// P-256 public key (65 bytes, uncompressed) and its 16-byte authentication secret.
    pub fn new(endpoint: &str, p256dh: &[u8], auth: &[u8]) -> Result<Self, PushError> {
        let refuse = || PushError::Endpoint(endpoint.chars().take(120).collect());
        if endpoint.len() > MAX_ENDPOINT || endpoint.contains(['@', '\\']) {
            return Err(refuse());
        }
        let uri: http::Uri = endpoint.parse().map_err(|_| refuse())?;
        if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
            return Err(refuse());
        }
        if p256dh.len() != 65 || p256dh[0] != 4 {
            return Err(PushError::Keys("p256dh must be an uncompressed P-256 point"));
        }
        let p256dh = p256::PublicKey::from_sec1_bytes(p256dh)
            .map_err(|_| PushError::Keys("p256dh is not a point of P-256"))?;
        let auth = auth.try_into().map_err(|_| PushError::Keys("auth must be 16 bytes"))?;
        Ok(Self { endpoint: uri, p256dh, auth })
    }

    /// Whether the endpoint is at one of [`PUSH_SERVICES`] (or under [`PUSH_SERVICE_DOMAIN`])
    /// on port 443, or at one of the `allowed` origins (`https://host[:port]`).
    pub fn check_service(&self, allowed: &[String]) -> Result<(), PushError> {
        let origin = Self::origin_of(&self.endpoint.to_string());
        let host = self.endpoint.host().unwrap_or_default().to_ascii_lowercase();
        let known = PUSH_SERVICES.contains(&host.as_str())
            || host.strip_suffix(PUSH_SERVICE_DOMAIN).is_some_and(|h| !h.is_empty());
        let default_port = self.endpoint.port_u16().is_none_or(|p| p == 443);
        if (known && default_port) || allowed.iter().any(|a| Self::origin_of(a) == origin) {
            Ok(())
        } else {
            Err(PushError::NotAllowed(origin))
        }
    }

    /// A subscription as a device sends it (its keys base64url, padded or not).
    pub fn from_wire(s: &protocol::PushSubscription) -> Result<Self, PushError> {
        let key = |k: &str| {
            base64_simd::URL_SAFE_NO_PAD
                .decode_to_vec(k.trim_end_matches('=').as_bytes())
                .map_err(|_| PushError::Keys("the keys must be base64url"))
        };
        Self::new(&s.endpoint, &key(&s.p256dh)?, &key(&s.auth)?)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    /// An endpoint's origin as a browser writes it (`https://host`, with `:port` unless 443):
    /// a VAPID token's audience, and what the audit log names (the rest names the browser).
    pub fn origin_of(endpoint: &str) -> String {
        let Ok(uri) = endpoint.parse::<http::Uri>() else { return "?".into() };
        let scheme = uri.scheme_str().unwrap_or("?");
        let host = uri.host().unwrap_or("?");
        match uri.port_u16() {
            Some(port) if !(scheme == "https" && port == 443) => {
                format!("{scheme}://{host}:{port}")
            }
            _ => format!("{scheme}://{host}"),
        }
    }
}

/// Builds the request that delivers `payload` to `subscription`'s browser: encrypted to its
/// keys, with the VAPID token (naming `contact`) and a [`TTL`].
pub fn request(
    key: &VapidKey,
    subscription: &Subscription,
    contact: &str,
    payload: &[u8],
) -> Result<http::Request<Vec<u8>>, PushError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PushError::TooLarge(payload.len()));
    }
    if !(contact.starts_with("mailto:") || contact.starts_with("https:")) {
        return Err(PushError::Contact);
    }
    let auth = web_push_native::Auth::clone_from_slice(&subscription.auth);
    let mut request = web_push_native::WebPushBuilder::new(
        subscription.endpoint.clone(),
        subscription.p256dh,
        auth,
    )
    .with_valid_duration(TTL)
    .build(payload.to_vec())
    .map_err(|e| PushError::Crypto(e.to_string()))?;
    // The token is made here rather than by `with_vapid`, whose audience leaves out the port:
    // RFC 8292 names the push resource's origin, port and all (a push service of your own may
    // listen on another than 443).
    let claims = jwt_simple::claims::Claims::create(TTL.into())
        .with_audience(Subscription::origin_of(&subscription.endpoint()))
        .with_subject(contact);
    let token = key.pair.sign(claims).map_err(|e| PushError::Crypto(e.to_string()))?;
    let k = base64_simd::URL_SAFE_NO_PAD.encode_to_string(key.public_key());
    let value = http::HeaderValue::try_from(format!("vapid t={token}, k={k}"))
        .map_err(|e| PushError::Crypto(e.to_string()))?;
    request.headers_mut().insert(http::header::AUTHORIZATION, value);
    Ok(request)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use base64_simd::URL_SAFE_NO_PAD as B64;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode_to_vec(s.as_bytes()).unwrap()
    }

    /// RFC 8291, section 5 and appendix A: the example message opens, with the user agent's
    /// private key and authentication secret, to the example's plaintext.
    #[test]
    fn rfc8291s_example_opens() {
        let ciphertext = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        let ua_private =
            p256::SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
                .unwrap();
        let auth = web_push_native::Auth::clone_from_slice(&b64("BTBZMqHH6r4Tts7J_aSIgg"));
        // The user agent's public key is the example's.
        assert_eq!(
            ua_private.public_key().to_encoded_point(false).as_bytes(),
            b64(
                "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
            )
        );
        let plaintext = web_push_native::decrypt(ciphertext, &ua_private, &auth).unwrap();
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
    }

    /// A browser's keys, as a subscription gives them.
    fn browser() -> (p256::SecretKey, Subscription) {
        let ua = p256::SecretKey::from_slice(&[0x31; 32]).unwrap();
        let public = ua.public_key().to_encoded_point(false);
        let sub =
            Subscription::new("https://push.example.net/send/abc123", public.as_bytes(), &[7; 16])
                .unwrap();
        (ua, sub)
    }

    #[test]
    fn a_push_is_encrypted_to_the_browser_and_signed_for_the_push_service() {
        let key = VapidKey::from_bytes(&[0x42; 32]).unwrap();
        let (ua, sub) = browser();
        let payload = br#"{"title":"1 action needs you on workstation"}"#;
        let request = request(&key, &sub, "mailto:me@example.org", payload).unwrap();
        assert_eq!(request.uri(), "https://push.example.net/send/abc123");
        assert_eq!(request.method(), http::Method::POST);
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_string();
        assert_eq!(header("content-encoding"), "aes128gcm");
        assert_eq!(header("ttl"), TTL.as_secs().to_string());
        // What the push service carries opens only with the browser's keys.
        let auth = web_push_native::Auth::clone_from_slice(&[7; 16]);
        let opened = web_push_native::decrypt(request.body().clone(), &ua, &auth).unwrap();
        assert_eq!(opened, payload);
        let other = p256::SecretKey::from_slice(&[0x32; 32]).unwrap();
        assert!(web_push_native::decrypt(request.body().clone(), &other, &auth).is_err());

        // RFC 8292: `vapid t=JWT, k=KEY`; checked here with ring, apart from the crates that made it.
        let authorization = header("authorization");
        let rest = authorization.strip_prefix("vapid t=").unwrap();
        let (token, k) = rest.split_once(", k=").unwrap();
        assert_eq!(b64(k), key.public_key());
        let [head, claims, signature] = token.split('.').collect::<Vec<_>>()[..] else { panic!() };
        let head: serde_json::Value = serde_json::from_slice(&b64(head)).unwrap();
        assert_eq!(head["alg"], "ES256");
        assert_eq!(head["typ"], "JWT");
        let claims: serde_json::Value = serde_json::from_slice(&b64(claims)).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        // RFC 8292: the push resource's origin, its port too.
        for (endpoint, aud) in [
            ("https://push.example.net:8443/x", "https://push.example.net:8443"),
            ("https://push.example.net:443/x", "https://push.example.net"),
            ("https://127.0.0.1:9/x", "https://127.0.0.1:9"),
        ] {
            let sub = Subscription::new(
                endpoint,
                ua.public_key().to_encoded_point(false).as_bytes(),
                &[7; 16],
            )
            .unwrap();
            let made = super::request(&key, &sub, "mailto:me@example.org", b"x").unwrap();
            let authorization = made.headers()["authorization"].to_str().unwrap();
            let token =
                authorization.strip_prefix("vapid t=").unwrap().split(", k=").next().unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&b64(token.split('.').nth(1).unwrap())).unwrap();
            assert_eq!(claims["aud"], aud, "{endpoint}");
        }
        assert_eq!(claims["sub"], "mailto:me@example.org");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp > now && exp <= now + 24 * 3600, "RFC 8292: at most 24 hours");
        let signed =
            format!("{}.{}", token.split('.').next().unwrap(), token.split('.').nth(1).unwrap());
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            key.public_key(),
        );
        public.verify(signed.as_bytes(), &b64(signature)).unwrap();
        let mut forged = b64(signature);
        forged[0] ^= 1;
        assert!(public.verify(signed.as_bytes(), &forged).is_err());
    }

    #[test]
    fn only_https_endpoints_and_well_formed_keys_are_taken() {
        let (_, good) = browser();
        let key = good.p256dh.to_encoded_point(false);
        for endpoint in [
            "http://push.example.net/x",
            "https://user:pass@push.example.net/x",
            "https:///x",
            "file:///etc/passwd",
            "ftp://push.example.net/",
            "not a url",
        ] {
            assert!(
                matches!(
                    Subscription::new(endpoint, key.as_bytes(), &[7; 16]),
                    Err(PushError::Endpoint(_))
                ),
                "{endpoint}"
            );
        }
        let long = format!("https://push.example.net/{}", "a".repeat(MAX_ENDPOINT));
        assert!(Subscription::new(&long, key.as_bytes(), &[7; 16]).is_err());
        assert!(Subscription::new("https://p.example/x", &key.as_bytes()[..64], &[7; 16]).is_err());
        assert!(
            Subscription::new("https://p.example/x", &[4; 65], &[7; 16]).is_err(),
            "not on the curve"
        );
        assert!(Subscription::new("https://p.example/x", key.as_bytes(), &[7; 15]).is_err());
        let vapid = VapidKey::from_bytes(&[0x42; 32]).unwrap();
        assert!(matches!(request(&vapid, &good, "me@example.org", b"x"), Err(PushError::Contact)));
        let big = vec![0; MAX_PAYLOAD + 1];
        assert!(matches!(
            request(&vapid, &good, DEFAULT_CONTACT, &big),
            Err(PushError::TooLarge(_))
        ));
        assert!(request(&vapid, &good, DEFAULT_CONTACT, &big[1..]).is_ok());
    }

    #[test]
    fn only_known_push_services_or_allowed_origins_are_posted_to() {
        let (_, good) = browser();
        let key = good.p256dh.to_encoded_point(false);
        let sub = |e: &str| Subscription::new(e, key.as_bytes(), &[7; 16]).unwrap();
        let allowed = ["https://push.example.net:8443".to_string()];
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/abc",
            "https://web.push.apple.com/QGx",
            "https://wns2-par02p.notify.windows.com/w/?token=x",
            "https://FCM.googleapis.com:443/fcm/send/abc",
            "https://push.example.net:8443/x",
        ] {
            assert!(sub(ok).check_service(&allowed).is_ok(), "{ok}");
        }
        for refused in [
            "https://fcm.googleapis.com:8443/fcm/send/abc",
            "https://fcm.googleapis.com.example.org/x",
            "https://notify.windows.com/x",
            "https://evilnotify.windows.com.example/x",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://192.168.1.1/admin",
            "https://push.example.net/x",
            "https://push.example.net:8444/x",
        ] {
            assert!(
                matches!(sub(refused).check_service(&allowed), Err(PushError::NotAllowed(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_vapid_key_is_kept_private_and_stays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/vapid.key");
        let first = VapidKey::load_or_create(&path).unwrap();
        let again = VapidKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.public_key().len(), 65);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
