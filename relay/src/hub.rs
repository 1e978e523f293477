//! Who is connected, which devices each host registered, and routing between them.
//!
//! Pure bookkeeping behind a mutex: no I/O and no awaiting while it is held. Delivery never
//! waits either: a frame goes into the target connection's queue or, if that queue already holds
//! more than the limit, the target is cut off as too slow, so one slow phone stalls no one else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use protocol::relay::{FromRelay, Registration, Side};
use protocol::{PairingToken, RelayKey};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::Metrics;

/// The most devices that may knock with one pairing offer (the right one, and a few that
/// guessed wrong or were sent by a relay that saw the token): each gets a route to the host
/// for the pairing handshake only, and the host burns the offer at the first wrong proof.
pub(crate) const MAX_KNOCKS: usize = 4;

/// One host's open offers: token → the devices that knocked with it.
type Knocks = HashMap<PairingToken, Vec<RelayKey>>;

/// Why a connection is being closed by the relay.
pub(crate) type Kick = Option<(protocol::relay::CloseCode, String)>;

/// One authenticated connection, as the hub sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) key: RelayKey,
    pub(crate) side: Side,
    pub(crate) tx: mpsc::UnboundedSender<Message>,
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) kick: watch::Sender<Kick>,
}

impl Conn {
    /// Queues a message unless the queue is over `max_queued` bytes; then cuts the connection.
    fn deliver(&self, message: Message, max_queued: usize, metrics: &Metrics) -> bool {
        let size = message.len();
        let queued = self.queued.fetch_add(size, Ordering::Relaxed) + size;
        if queued > max_queued {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            if self.kick.borrow().is_none() {
                Metrics::inc(&metrics.limit_closes);
                let _ = self.kick.send(Some((
                    protocol::relay::CloseCode::Policy,
                    format!("too slow: over {max_queued} bytes queued"),
                )));
            }
            return false;
        }
        if self.tx.send(message).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The relay's routing state.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    /// Bytes queued towards one connection before it is cut off.
    max_queued: usize,
    conns: HashMap<u64, Conn>,
    by_key: HashMap<RelayKey, Vec<u64>>,
    /// host → (last counter, devices)
    registrations: HashMap<RelayKey, (u64, HashSet<RelayKey>)>,
    /// device → the hosts whose registration names it (the other way round, so that a device
    /// coming or going costs its own hosts, not every registration).
    hosts_of: HashMap<RelayKey, HashSet<RelayKey>>,
    /// host → its open pairing offers' tokens → the devices that knocked with each
    offers: HashMap<RelayKey, Knocks>,
    next_id: u64,
    /// Keys connected at other nodes of a cluster ([`crate::cluster`]): their side, and at
    /// how many other nodes.
    remote: HashMap<RelayKey, (Side, usize)>,
}

/// Where a routed frame went.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Connections here it was queued for.
    pub(crate) local: usize,
    /// Keys connected at other nodes it is to go to, with their side.
    pub(crate) remote: Vec<(RelayKey, Side)>,
}

/// Why a frame was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// The pair is not registered by the host.
    NotAllowed,
    /// Nobody of that key is connected (or every target was cut off).
    Offline,
}

impl Hub {
    pub(crate) fn new(max_queued: usize) -> Self {
        Self { max_queued, ..Self::default() }
    }

    pub(crate) fn connections_of(&self, key: &RelayKey) -> usize {
        self.by_key.get(key).map_or(0, Vec::len)
    }

    /// Whether `key` is connected here or at another node.
    fn online(&self, key: &RelayKey) -> bool {
        self.by_key.contains_key(key) || self.remote.contains_key(key)
    }

    /// Keys connected at other nodes, for the figures.
    pub(crate) fn remote_keys(&self) -> usize {
        self.remote.len()
    }

    /// `key` (of `side`) is now connected at one more other node (`online`), or one fewer.
    /// When that makes it online or offline anywhere, the hosts and devices here that it
    /// concerns are told, as for a connection here.
    pub(crate) fn remote_presence(
        &mut self,
        key: RelayKey,
        side: Side,
        online: bool,
        metrics: &Metrics,
    ) {
        let before = self.online(&key);
        match (online, self.remote.get_mut(&key)) {
            (true, Some((_, nodes))) => *nodes += 1,
            (true, None) => {
                self.remote.insert(key, (side, 1));
            }
            (false, Some((_, nodes))) if *nodes > 1 => *nodes -= 1,
            (false, Some(_)) => {
                self.remote.remove(&key);
            }
            (false, None) => {}
        }
        let after = self.online(&key);
        if before != after {
            match side {
                Side::Device => self.presence(&key, after, metrics),
                Side::Host => self.host_presence(&key, after, None, metrics),
            }
        }
    }

    /// Adds a connection; returns its id. Tells the hosts that registered a device it is online.
    pub(crate) fn add(&mut self, conn: Conn, metrics: &Metrics) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let (key, side) = (conn.key, conn.side);
        self.conns.insert(id, conn);
        let first = !self.online(&key);
        self.by_key.entry(key).or_default().push(id);
        match side {
            Side::Device if first => self.presence(&key, true, metrics),
            Side::Host if first => self.host_presence(&key, true, None, metrics),
            Side::Device | Side::Host => {}
        }
        id
    }

    /// Tells a device's new connection `id`, once it is welcomed, which of the hosts that
    /// registered the device are connected.
    pub(crate) fn greet(&self, id: u64, metrics: &Metrics) {
        let Some(conn) = self.conns.get(&id).filter(|c| c.side == Side::Device) else { return };
        for host in self.hosts_of.get(&conn.key).into_iter().flatten() {
            let online = self.online(host);
            let event = FromRelay::HostPresence { host: host.to_string(), online };
            if let Ok(text) = serde_json::to_string(&event) {
                conn.deliver(Message::text(text), self.max_queued, metrics);
            }
        }
    }

    /// Removes a connection; tells hosts when a device's last connection went away.
    pub(crate) fn remove(&mut self, id: u64, metrics: &Metrics) {
        let Some(conn) = self.conns.remove(&id) else { return };
        let last = match self.by_key.get_mut(&conn.key) {
            Some(ids) => {
                ids.retain(|&i| i != id);
                ids.is_empty()
            }
            None => true,
        };
        if last {
            self.by_key.remove(&conn.key);
        }
        if last && !self.online(&conn.key) {
            match conn.side {
                Side::Device => self.presence(&conn.key, false, metrics),
                Side::Host => self.host_presence(&conn.key, false, None, metrics),
            }
        }
    }

    fn presence(&self, device: &RelayKey, online: bool, metrics: &Metrics) {
        let event = FromRelay::Presence { device: device.to_string(), online };
        let Ok(text) = serde_json::to_string(&event) else { return };
        for host in self.hosts_of.get(device).into_iter().flatten() {
            self.send_to_key(host, Side::Host, Message::text(text.clone()), metrics);
        }
    }

    /// Tells `host`'s registered devices (or only `to`) whether it is connected.
    fn host_presence(
        &self,
        host: &RelayKey,
        online: bool,
        to: Option<&RelayKey>,
        metrics: &Metrics,
    ) {
        let event = FromRelay::HostPresence { host: host.to_string(), online };
        let Ok(text) = serde_json::to_string(&event) else { return };
        let Some((_, devices)) = self.registrations.get(host) else { return };
        for device in devices.iter().filter(|d| to.is_none_or(|to| to == *d)) {
            self.send_to_key(device, Side::Device, Message::text(text.clone()), metrics);
        }
    }

    fn send_to_key(&self, key: &RelayKey, side: Side, message: Message, metrics: &Metrics) -> bool {
        let mut delivered = false;
        for id in self.by_key.get(key).into_iter().flatten() {
            if let Some(conn) = self.conns.get(id).filter(|c| c.side == side) {
                delivered |= conn.deliver(message.clone(), self.max_queued, metrics);
            }
        }
        delivered
    }

    /// Replaces a host's device list and open offers if `counter` is newer; returns false for
    /// a stale counter. Devices that knocked with an offer no longer open lose their route.
    pub(crate) fn register(
        &mut self,
        host: RelayKey,
        counter: u64,
        registration: Registration,
        metrics: &Metrics,
    ) -> bool {
        if self.registrations.get(&host).is_some_and(|(last, _)| counter <= *last) {
            return false;
        }
        let mut knocked = self.offers.remove(&host).unwrap_or_default();
        let offers: Knocks = registration
            .offers
            .into_iter()
            .map(|token| (token, knocked.remove(&token).unwrap_or_default()))
            .collect();
        if !offers.is_empty() {
            self.offers.insert(host, offers);
        }
        let devices: HashSet<RelayKey> = registration.devices.into_iter().collect();
        // Devices no longer registered lose their route at once; tell the host who is online.
        let online: Vec<RelayKey> = devices.iter().filter(|d| self.online(d)).copied().collect();
        let host_online = self.online(&host);
        let before = self.registrations.insert(host, (counter, devices.clone())).map(|(_, d)| d);
        for gone in before.iter().flatten().filter(|d| !devices.contains(d)) {
            if let Some(hosts) = self.hosts_of.get_mut(gone) {
                hosts.remove(&host);
                if hosts.is_empty() {
                    self.hosts_of.remove(gone);
                }
            }
        }
        for device in &devices {
            self.hosts_of.entry(*device).or_default().insert(host);
        }
        for device in online {
            let event = FromRelay::Presence { device: device.to_string(), online: true };
            if let Ok(text) = serde_json::to_string(&event) {
                self.send_to_key(&host, Side::Host, Message::text(text), metrics);
            }
            // A device just registered (paired) learns whether its host is here.
            if !before.as_ref().is_some_and(|b| b.contains(&device)) {
                self.host_presence(&host, host_online, Some(&device), metrics);
            }
        }
        true
    }

    /// A device not registered by `host` asks to reach it with an open offer's token. True if
    /// the offer is open (and has room for another device: at most [`MAX_KNOCKS`]).
    pub(crate) fn knock(
        &mut self,
        device: RelayKey,
        host: &RelayKey,
        token: &PairingToken,
    ) -> bool {
        let Some(knocked) = self.offers.get_mut(host).and_then(|o| o.get_mut(token)) else {
            return false;
        };
        if knocked.contains(&device) {
            return true;
        }
        if knocked.len() >= MAX_KNOCKS {
            return false;
        }
        knocked.push(device);
        true
    }

    /// The devices that knocked at `host`'s open offers, with the offer's token.
    pub(crate) fn knocks_at(&self, host: &RelayKey) -> Vec<(PairingToken, RelayKey)> {
        let offers = self.offers.get(host).into_iter().flatten();
        offers.flat_map(|(token, devices)| devices.iter().map(|d| (*token, *d))).collect()
    }

    fn registered(&self, host: &RelayKey, device: &RelayKey) -> bool {
        self.registrations.get(host).is_some_and(|(_, d)| d.contains(device))
            || self
                .offers
                .get(host)
                .is_some_and(|offers| offers.values().any(|knocked| knocked.contains(device)))
    }

    /// Routes `frame` (already addressed as coming from `from`) from `from` (of `side`) to `to`,
    /// or to all of a host's devices: queued for the connections here, and named for the
    /// other nodes where the addressees are connected too.
    pub(crate) fn route(
        &self,
        from: &RelayKey,
        side: Side,
        broadcast: bool,
        to: &RelayKey,
        frame: Message,
        metrics: &Metrics,
    ) -> Result<Routed, NoRoute> {
        let mut routed = Routed::default();
        let send = |key: &RelayKey, side: Side, routed: &mut Routed| {
            let here = self.send_to_key(key, side, frame.clone(), metrics);
            let elsewhere = self.remote.get(key).is_some_and(|(s, _)| *s == side);
            routed.local += usize::from(here);
            if elsewhere {
                routed.remote.push((*key, side));
            }
        };
        match (side, broadcast) {
            (Side::Host, true) => {
                for device in self.registrations.get(from).into_iter().flat_map(|(_, d)| d) {
                    send(device, Side::Device, &mut routed);
                }
            }
            (Side::Host, false) if self.registered(from, to) => {
                send(to, Side::Device, &mut routed);
            }
            (Side::Device, false) if self.registered(to, from) => {
                send(to, Side::Host, &mut routed);
            }
            _ => return Err(NoRoute::NotAllowed),
        }
        if routed.local == 0 && routed.remote.is_empty() {
            Err(NoRoute::Offline)
        } else {
            Ok(routed)
        }
    }

    /// A frame another node forwarded from `from` to `to` (of `side`), checked against the
    /// registrations here as a frame from a connection here is: queued for `to`'s connections
    /// here; how many took it.
    pub(crate) fn deliver_forwarded(
        &self,
        from: &RelayKey,
        to: &RelayKey,
        side: Side,
        frame: Message,
        metrics: &Metrics,
    ) -> usize {
        let allowed = match side {
            Side::Device => self.registered(from, to),
            Side::Host => self.registered(to, from),
        };
        if !allowed {
            return 0;
        }
        usize::from(self.send_to_key(to, side, frame, metrics))
    }

    /// Every connection's kick switch, for shutdown.
    pub(crate) fn all_kicks(&self) -> Vec<watch::Sender<Kick>> {
        self.conns.values().map(|c| c.kick.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of `key` on `side`, and what the hub queues for it.
    fn conn(key: RelayKey, side: Side) -> (Conn, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (kick, _) = watch::channel(None);
        (Conn { key, side, tx, queued: Arc::default(), kick }, rx)
    }

    fn heard(rx: &mut mpsc::UnboundedReceiver<Message>) -> Vec<FromRelay> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| serde_json::from_str(m.to_text().ok()?).ok())
            .collect()
    }

    fn host_presence(host: RelayKey, online: bool) -> FromRelay {
        FromRelay::HostPresence { host: host.to_string(), online }
    }

    #[test]
    fn a_device_hears_when_its_host_comes_and_goes_and_where_it_is_when_greeted() {
        let (metrics, mut hub) = (Metrics::default(), Hub::new(1 << 20));
        let (host, device, stranger) = (RelayKey([1; 32]), RelayKey([2; 32]), RelayKey([3; 32]));
        let (h, _host_rx) = conn(host, Side::Host);
        let host_id = hub.add(h, &metrics);
        let (d, mut device_rx) = conn(device, Side::Device);
        let device_id = hub.add(d, &metrics);
        let (s, mut stranger_rx) = conn(stranger, Side::Device);
        let stranger_id = hub.add(s, &metrics);
        // Registered now: the device, connected, learns its host is here.
        let registration = Registration { devices: vec![device], offers: vec![] };
        assert!(hub.register(host, 1, registration.clone(), &metrics));
        assert_eq!(heard(&mut device_rx), vec![host_presence(host, true)]);
        // Registered again, unchanged: nothing new to say.
        assert!(hub.register(host, 2, registration, &metrics));
        assert!(heard(&mut device_rx).is_empty());
        // The host's last connection goes, and comes back.
        hub.remove(host_id, &metrics);
        assert_eq!(heard(&mut device_rx), vec![host_presence(host, false)]);
        hub.greet(device_id, &metrics);
        assert_eq!(heard(&mut device_rx), vec![host_presence(host, false)]);
        let (h, _host_rx) = conn(host, Side::Host);
        hub.add(h, &metrics);
        assert_eq!(heard(&mut device_rx), vec![host_presence(host, true)]);
        hub.greet(device_id, &metrics);
        assert_eq!(heard(&mut device_rx), vec![host_presence(host, true)]);
        // A device the host did not register hears nothing of it.
        hub.greet(stranger_id, &metrics);
        assert!(heard(&mut stranger_rx).is_empty());
    }

    #[test]
    fn a_host_hears_of_the_devices_it_registers_now_and_of_no_others() {
        let (metrics, mut hub) = (Metrics::default(), Hub::new(1 << 20));
        let (host, other_host) = (RelayKey([1; 32]), RelayKey([9; 32]));
        let (device, other) = (RelayKey([2; 32]), RelayKey([3; 32]));
        let (h, mut host_rx) = conn(host, Side::Host);
        hub.add(h, &metrics);
        let (h, mut other_host_rx) = conn(other_host, Side::Host);
        hub.add(h, &metrics);
        let both = Registration { devices: vec![device, other], offers: vec![] };
        assert!(hub.register(host, 1, both.clone(), &metrics));
        assert!(hub.register(other_host, 1, both, &metrics));
        heard(&mut host_rx);
        heard(&mut other_host_rx);
        // `host` drops `other`: it hears no more of it, while `other_host` still does.
        let one = Registration { devices: vec![device], offers: vec![] };
        assert!(hub.register(host, 2, one, &metrics));
        heard(&mut host_rx);
        let (d, _rx) = conn(other, Side::Device);
        let id = hub.add(d, &metrics);
        let online = FromRelay::Presence { device: other.to_string(), online: true };
        assert!(heard(&mut host_rx).is_empty());
        assert_eq!(heard(&mut other_host_rx), vec![online]);
        hub.remove(id, &metrics);
        let (d, _rx) = conn(device, Side::Device);
        hub.add(d, &metrics);
        let online = FromRelay::Presence { device: device.to_string(), online: true };
        assert_eq!(heard(&mut host_rx), vec![online.clone()]);
        assert_eq!(heard(&mut other_host_rx)[1..], [online]);
    }
}
