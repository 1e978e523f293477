//! The pairing link: what `agent-host pair` prints as a QR code and as text.
//!
//! ```text
//! https://RELAY/pair#v=1&host=host1…&secret=HEX64&expires=UNIX_MS[&cert=HEX64]
//! https://PAGE/pair#v=1&host=host1…&secret=HEX64&expires=UNIX_MS&relay=RELAY[&cert=HEX64]
//! ```
//!
//! `RELAY` is the relay's `host:port`, or several of a cluster's nodes, comma-separated (at most
//! [`MAX_RELAYS`]): a client takes the next when one fails; the path is the web UI's pairing page, served by the
//! relay itself (the first form: `agent-host up`'s relay on the person's own machine) or from
//! another origin the person trusts (`PAGE`, a `host:port`; the relay is then named apart, and
//! the page reaches it across origins). The `remote` CLI uses the relay alone. Everything secret
//! sits in the fragment, which a browser never sends to the server, so the relay that serves the
//! page never sees the secret. `cert` is the SHA-256 of the relay's certificate when it is
//! self-signed: the device pins it instead of trusting certificate authorities. Values are hex,
//! decimal or bech32m, so nothing needs percent-encoding; unknown parameters are refused, like
//! unknown message fields.

use std::fmt;
use std::str::FromStr;

use crate::keys::HostId;
use crate::pairing::PairingSecret;

/// The link format's version.
pub const LINK_VERSION: u32 = 1;

/// The most relay addresses a link names (the nodes of a cluster).
pub const MAX_RELAYS: usize = 8;

/// The addresses in a relay list (`a:443,b:443`), each `host:port`.
pub fn relay_addresses(relay: &str) -> impl Iterator<Item = &str> {
    relay.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// Whether `relay` is one to [`MAX_RELAYS`] plain `host:port` addresses, comma-separated.
pub fn valid_relays(relay: &str) -> bool {
    let count = relay.split(',').count();
    count <= MAX_RELAYS && relay.split(',').all(plain_host)
}

/// A parsed pairing link.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingLink {
    /// The relay, `host:port`, or several nodes of one, comma-separated.
    pub relay: String,
    /// Where the web UI's page is, `host:port`, when not at the relay.
    pub page: Option<String>,
    /// The host to pair with (its key).
    pub host: HostId,
    /// The one-time secret.
    pub secret: [u8; 32],
    /// When the offer lapses (Unix ms).
    pub expires_at_ms: u64,
    /// SHA-256 of a self-signed relay's certificate, to pin.
    pub cert_sha256: Option<[u8; 32]>,
}

impl fmt::Debug for PairingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingLink")
            .field("relay", &self.relay)
            .field("page", &self.page)
            .field("host", &self.host)
            .field("secret", &"…")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl PairingLink {
    /// The secret, as the pairing proof takes it.
    pub fn pairing_secret(&self) -> PairingSecret {
        PairingSecret::from_bytes(self.secret)
    }
}

impl fmt::Display for PairingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Several relays: the page is at the first, and the list is named apart.
        let several = self.relay.contains(',');
        let first = relay_addresses(&self.relay).next().unwrap_or(&self.relay);
        write!(
            f,
            "https://{}/pair#v={LINK_VERSION}&host={}&secret={}&expires={}",
            self.page.as_deref().unwrap_or(first),
            self.host,
            hex::encode(self.secret),
            self.expires_at_ms
        )?;
        if self.page.is_some() || several {
            write!(f, "&relay={}", self.relay)?;
        }
        if let Some(cert) = &self.cert_sha256 {
            write!(f, "&cert={}", hex::encode(cert))?;
        }
        Ok(())
    }
}

/// Why a pairing link could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Not `https://RELAY/pair#…`.
    #[error("not a pairing link (expected https://RELAY/pair#…)")]
    NotALink,
    /// A version this side does not read.
    #[error("pairing link version {0} is not supported")]
    Version(String),
    /// A parameter is missing.
    #[error("the pairing link has no `{0}`")]
    Missing(&'static str),
    /// A parameter is malformed, repeated or unknown.
    #[error("the pairing link's `{0}` is not valid")]
    Invalid(String),
}

/// A `host:port` (or a bare host) with nothing that could make it a path, a query, a
/// fragment, a user, another parameter or another header.
pub fn plain_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

fn hex32(value: &str, name: &str) -> Result<[u8; 32], LinkError> {
    let mut out = [0u8; 32];
    if value.len() != 64 || value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(LinkError::Invalid(name.into()));
    }
    hex::decode_to_slice(value, &mut out).map_err(|_| LinkError::Invalid(name.into()))?;
    Ok(out)
}

impl FromStr for PairingLink {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, LinkError> {
        let s = s.trim();
        if s.len() > 1024 {
            return Err(LinkError::NotALink);
        }
        let rest = s.strip_prefix("https://").ok_or(LinkError::NotALink)?;
        let (origin, fragment) = rest.split_once("/pair#").ok_or(LinkError::NotALink)?;
        if !plain_host(origin) {
            return Err(LinkError::NotALink);
        }
        let (mut version, mut host, mut secret, mut expires, mut cert, mut relay) =
            (None, None, None, None, None, None);
        for pair in fragment.split('&') {
            let (name, value) = pair.split_once('=').ok_or(LinkError::Invalid(pair.into()))?;
            let slot = match name {
                "v" => &mut version,
                "host" => &mut host,
                "secret" => &mut secret,
                "expires" => &mut expires,
                "cert" => &mut cert,
                "relay" => &mut relay,
                _ => return Err(LinkError::Invalid(name.into())),
            };
            if slot.replace(value).is_some() {
                return Err(LinkError::Invalid(name.into()));
            }
        }
        let version = version.ok_or(LinkError::Missing("v"))?;
        if version != LINK_VERSION.to_string() {
            return Err(LinkError::Version(version.into()));
        }
        if relay.is_some_and(|r| !valid_relays(r)) {
            return Err(LinkError::Invalid("relay".into()));
        }
        Ok(Self {
            relay: relay.unwrap_or(origin).into(),
            page: relay.map(|_| origin.into()),
            host: host
                .ok_or(LinkError::Missing("host"))?
                .parse()
                .map_err(|_| LinkError::Invalid("host".into()))?,
            secret: hex32(secret.ok_or(LinkError::Missing("secret"))?, "secret")?,
            expires_at_ms: expires
                .ok_or(LinkError::Missing("expires"))?
                .parse()
                .map_err(|_| LinkError::Invalid("expires".into()))?,
            cert_sha256: cert.map(|c| hex32(c, "cert")).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn link() -> PairingLink {
        PairingLink {
            relay: "192.168.1.5:7443".into(),
            page: None,
            host: HostId::new(SecretKey::from_seed(&[1; 32]).public_key()),
            secret: [7; 32],
            expires_at_ms: 1_800_000_000_000,
            cert_sha256: Some([9; 32]),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_secret_in_the_fragment() {
        let text = link().to_string();
        let (before, after) = text.split_once('#').unwrap();
        assert!(!before.contains(&hex::encode([7u8; 32])));
        assert!(after.contains(&hex::encode([7u8; 32])));
        assert_eq!(text.parse::<PairingLink>().unwrap(), link());
        let no_cert = PairingLink { cert_sha256: None, ..link() };
        assert_eq!(no_cert.to_string().parse::<PairingLink>().unwrap(), no_cert);
    }

    #[test]
    fn a_page_elsewhere_names_the_relay_apart() {
        let elsewhere = PairingLink { page: Some("ui.example.com".into()), ..link() };
        let text = elsewhere.to_string();
        assert!(text.starts_with("https://ui.example.com/pair#v=1&"), "{text}");
        assert!(text.contains("&relay=192.168.1.5:7443"), "{text}");
        assert_eq!(text.parse::<PairingLink>().unwrap(), elsewhere);
        // The relay is a host and port, nothing more.
        for bad in ["", "a/b", "a@b", "x%2fy", "a?b"] {
            let changed = text.replace("192.168.1.5:7443", bad);
            assert_eq!(
                changed.parse::<PairingLink>(),
                Err(LinkError::Invalid("relay".into())),
                "{bad}"
            );
        }
        assert!(format!("{text}&relay=x").parse::<PairingLink>().is_err(), "repeated");
    }

    #[test]
    fn a_cluster_link_names_its_nodes() {
        let nodes =
            PairingLink { relay: "a.example:443,b.example:443,10.0.0.3:7443".into(), ..link() };
        let text = nodes.to_string();
        assert!(text.starts_with("https://a.example:443/pair#v=1&"), "{text}");
        assert!(text.contains("&relay=a.example:443,b.example:443,10.0.0.3:7443"), "{text}");
        let parsed = text.parse::<PairingLink>().unwrap();
        assert_eq!(parsed.relay, nodes.relay);
        assert_eq!(parsed.page.as_deref(), Some("a.example:443"));
        let addresses: Vec<&str> = relay_addresses(&parsed.relay).collect();
        assert_eq!(addresses, ["a.example:443", "b.example:443", "10.0.0.3:7443"]);
        // Each a host and port; at most eight.
        for bad in ["a:1,", "a:1,,b:2", "a:1,b/c:2"] {
            assert!(text.replace(&nodes.relay, bad).parse::<PairingLink>().is_err(), "{bad}");
        }
        let nine = ["n:1"; 9].join(",");
        assert!(text.replace(&nodes.relay, &nine).parse::<PairingLink>().is_err());
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let text = link().to_string();
        assert_eq!("http://x/pair#v=1".parse::<PairingLink>(), Err(LinkError::NotALink));
        assert_eq!(
            text.replace("v=1", "v=2").parse::<PairingLink>(),
            Err(LinkError::Version("2".into()))
        );
        assert!(format!("{text}&x=1").parse::<PairingLink>().is_err());
        assert!(format!("{text}&v=1").parse::<PairingLink>().is_err());
        assert!(text.replace("host=host1", "host=dev1").parse::<PairingLink>().is_err());
        let short = text.replace(&hex::encode([7u8; 32]), "07");
        assert_eq!(short.parse::<PairingLink>(), Err(LinkError::Invalid("secret".into())));
        let missing = text.replace("&expires=1800000000000", "");
        assert_eq!(missing.parse::<PairingLink>(), Err(LinkError::Missing("expires")));
    }
}
