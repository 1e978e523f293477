//! The bodies of the fuzz targets: one per decoder of bytes the bridge does not control (a
//! peer's frames, a relay's messages, a local client's lines, files on disk, links). Each must
//! never panic, and where a decoder has an encoder beside it, what decodes must encode back to
//! the same value.
//!
//! The binaries in `fuzz_targets/` are one line each around these, so that `scripts/fuzz` runs
//! them under libFuzzer and `.ci/run` replays every committed seed through them on stable Rust
//! (a stale target fails to build there, and a seed that panics fails the run).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // a failed check here is the finding

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The golden files' "now"; the envelope corpus holds their frames.
const NOW_MS: u64 = 1_767_225_600_000;

/// Envelope decode + verify: never verifies a frame that the fixed device key did not sign.
pub fn envelope_open(data: &[u8]) {
    use protocol::envelope::{Sealed, VerifyContext};
    use protocol::{PublicKey, ReplayWindow, SecretKey};
    let host = SecretKey::from_seed(&[0x22; 32]).public_key();
    let device = SecretKey::from_seed(&[0x11; 32]).public_key();
    let Ok(sealed) = Sealed::decode(data) else { return };
    // As the pairing flow would: accept the claimed key only through key acceptance.
    let Ok(claimed) = PublicKey::from_bytes(sealed.sender()) else { return };
    let ctx = VerifyContext::new(&host, NOW_MS);
    if let Ok(verified) = sealed.verify(&claimed, &ctx, &mut ReplayWindow::new()) {
        // Only frames signed with a key whose secret the fuzzer cannot know verify, so anything
        // that verifies here must be one of the corpus frames, signed by the device.
        assert_eq!(verified.sender(), &device);
    }
}

/// Resume payloads: decoded, encoded back byte for byte, and fed to a receiving peer in
/// sequence, which delivers each (stream, number) at most once while it follows every stream
/// (up to `MAX_STREAMS` incarnations; past that a forgotten one starts afresh, and the
/// envelope's replay window is what refuses its messages again).
pub fn resume_frames(data: &[u8]) {
    use protocol::resume::{Frame, Incoming, Join, MAX_STREAMS, Peer};
    let mut receiver = Peer::new(7, Join::AtFirstFrame);
    let mut delivered = std::collections::HashSet::new();
    let mut epochs = std::collections::HashSet::new();
    // The input is a run of payloads, each behind a one-byte length.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (payload, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        let decoded = Frame::decode(payload);
        if let Ok(Frame::Data { epoch, .. }) = decoded {
            epochs.insert(epoch);
        }
        if let Ok(frame) = decoded {
            assert_eq!(frame.encode(), payload, "decode then encode is not the identity");
        }
        match receiver.receive(payload) {
            Incoming::Deliver(_) => {
                let Ok(Frame::Data { epoch, seq, .. }) = decoded else {
                    panic!("delivered what is not a data frame")
                };
                let again = !delivered.insert((epoch, seq));
                assert!(!again || epochs.len() > MAX_STREAMS, "delivered ({epoch}, {seq}) twice");
            }
            Incoming::Malformed => assert!(decoded.is_err()),
            Incoming::Nothing => {}
        }
        let _ = receiver.poll_acks();
    }
}

/// Both sides of a channel made with fixed keys and ephemerals (the seeds' data frames are
/// sealed by its device side).
pub fn fixed_channel() -> (protocol::channel::Channel, protocol::channel::Channel, Vec<u8>, Vec<u8>)
{
    use protocol::channel::{self, ChannelId, ChannelKeys, Frame};
    let (host_x, device_x) = ([0x41u8; 32], [0x42u8; 32]);
    let host = protocol::SecretKey::from_seed(&[0x22; 32]).public_key();
    let device = protocol::SecretKey::from_seed(&[0x11; 32]).public_key();
    let keys = |local: [u8; 32], remote: [u8; 32]| ChannelKeys {
        local_static: local.into(),
        remote_static: channel::public_of(&remote).unwrap(),
        host,
        device,
    };
    let id = ChannelId([1; 8]);
    let (mut initiator, hello) =
        channel::initiate_with(Ok(&keys(device_x, host_x)), id, 9, 1 << 20, &[0x52; 32]).unwrap();
    let Ok(Frame::Hello { message, .. }) = Frame::decode(&hello) else { unreachable!() };
    let (at_host, answer, _) =
        channel::respond_with(Ok(&keys(host_x, device_x)), id, message, 1 << 20, &[0x51; 32])
            .unwrap();
    let Ok(Frame::Answer { message, .. }) = Frame::decode(&answer) else { unreachable!() };
    let at_device = initiator.finish(message).unwrap();
    (at_device, at_host, hello, answer)
}

/// End-to-end channel frames, one after another (each behind a two-byte length): decoded and
/// encoded back byte for byte; data frames opened by the host's side of [`fixed_channel`],
/// which takes each nonce once and only upwards, and never more than its limit.
pub fn channel_frames(data: &[u8]) {
    use protocol::channel::{ChannelError, Frame};
    let (_, mut host, _, _) = fixed_channel();
    let mut last: Option<u64> = None;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let (bytes, next) = rest[2..].split_at(len.min(rest.len() - 2));
        rest = next;
        let Ok(frame) = Frame::decode(bytes) else { continue };
        assert_eq!(frame.encode(), bytes, "decode then encode is not the identity");
        if let Frame::Data { id, nonce, ciphertext } = frame
            && id == host.id()
        {
            match host.open(nonce, ciphertext) {
                Ok(payload) => {
                    assert!(last.is_none_or(|l| nonce > l), "nonce {nonce} taken twice");
                    last = Some(nonce);
                    assert!(payload.is_none_or(|p| p.len() <= 1 << 20));
                }
                Err(ChannelError::Replayed) => assert!(last.is_some_and(|l| nonce <= l)),
                Err(_) => {}
            }
        }
    }
}

/// A relay's routing header, and the JSON control messages both ways with the checks a relay
/// and a client run on them.
pub fn relay_frames(data: &[u8]) {
    use protocol::relay::{FromRelay, ToRelay, data_frame, split_frame};
    if let Ok((kind, peer, payload)) = split_frame(data) {
        assert_eq!(data_frame(kind, &peer, payload), data);
    }
    if let Ok(message) = serde_json::from_slice::<ToRelay>(data) {
        let again: ToRelay =
            serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
        assert_eq!(again, message);
        match &message {
            ToRelay::Hello { side, key, signature } => {
                let bindings = [[0x55; 32]];
                let _ =
                    protocol::relay::check_hello_any(*side, key, signature, &[0x44; 32], &bindings);
            }
            ToRelay::Register { counter, devices, offers, signature } => {
                let host = protocol::SecretKey::from_seed(&[0x22; 32]).public_key();
                let _ =
                    protocol::relay::check_register(&host, *counter, devices, offers, signature);
            }
            ToRelay::Knock { host, token } => {
                let _ = protocol::relay::hex32(host, "host");
                let _ = protocol::relay::hex32(token, "token");
            }
        }
    }
    if let Ok(message) = serde_json::from_slice::<FromRelay>(data) {
        let again: FromRelay =
            serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
        assert_eq!(again, message);
    }
}

/// The local API's lines: what a client sends the host, and what the host answers.
pub fn local_api_lines(data: &[u8]) {
    use agent_host::local_api::{ApiRequest, ApiResponse, PairAnswer};
    use agent_host::session::SessionUpdate;
    for line in data.split(|&b| b == b'\n') {
        if let Ok(request) = serde_json::from_slice::<ApiRequest>(line) {
            let _ = (request.needs_owner(), request.op());
            let back: ApiRequest =
                serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
            assert_eq!(back, request);
        }
        if let Ok(update) = serde_json::from_slice::<SessionUpdate>(line) {
            let back: SessionUpdate =
                serde_json::from_slice(&serde_json::to_vec(&update).unwrap()).unwrap();
            assert_eq!(back, update);
        }
        let _ = serde_json::from_slice::<PairAnswer>(line);
        let _ = serde_json::from_slice::<ApiResponse>(line);
    }
}

/// A pairing link as a person pastes it or a QR code holds it.
pub fn pairing_link(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(link) = text.parse::<protocol::PairingLink>() {
        let again: protocol::PairingLink = link.to_string().parse().unwrap();
        assert_eq!(again, link);
    }
}

/// A directory of this process's own for the targets that read files.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };

        // libFuzzer ends the process without running destructors: the directories of runs that
        // ended are removed by the next one (where /proc says which processes still run).
        let proc_mounted = Path::new("/proc/self").exists();
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("agent-bridge-fuzz-"))
                .and_then(|rest| rest.split('-').next());
            if proc_mounted && pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        // A new directory of this process's own (never one made or planted before it).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("agent-bridge-fuzz-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        dir
    })
}

/// The audit log as `agent-host audit verify` reads it and as a starting host opens it.
pub fn audit_log(data: &[u8]) {
    let dir = scratch().join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("audit.log");
    std::fs::write(&log, data).unwrap();
    let _ = agent_host::audit::verify(&log);
    if let Ok(records) = agent_host::audit::read_records(&log) {
        for record in &records {
            let _ = agent_host::audit::describe(record, &|_| None);
        }
    }
    let _ = agent_host::audit::AuditLog::open_with(&log, &mut |_| {});
}

/// The device registry's files as a starting host loads them: the input is `devices.json`,
/// `counters.json` and `counters.journal`, split at the first two 0xff bytes (never in JSON).
pub fn device_state(data: &[u8]) {
    let dir = scratch().join("state");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut parts = data.splitn(3, |&b| b == 0xff);
    for name in ["devices.json", "counters.json", "counters.journal"] {
        if let Some(bytes) = parts.next() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let Ok(mut registry) = agent_host::devices::Registry::load(&dir) else { return };
    let loaded = registry.list();
    // As a starting host: a fresh block for every device, then an event to each never reuses
    // a counter reserved before.
    if registry.prepare().is_err() {
        return;
    }
    for (device, counters) in loaded {
        let _ = registry.rx(&device.id);
        if let Ok(tx) = registry.next_tx(&device.id) {
            assert!(tx.counter > counters.tx_reserved, "a reserved counter was handed out again");
        }
    }
}

/// A settings file: permission rules (then a decision under them, which compiles every rule)
/// and the host's own `sandbox` object.
pub fn settings(data: &[u8]) {
    use agent_host::policy::{Policy, Subject, Trust, rules::Settings};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/work/space/.claude/settings.json");
    let _ = agent_host::userenv::SandboxSettings::parse(text, path);
    let Ok(settings) = Settings::parse(text, path) else { return };
    let workspace = Path::new("/work/space");
    let policy = Policy::new(workspace, vec![(settings, Trust::Trusted)], None, Vec::new());
    for subject in [
        Subject::Bash("git status && rm -rf build".into()),
        Subject::Read("/work/space/src/main.rs".into()),
        Subject::Edit("/etc/passwd".into()),
        Subject::WebFetch("https://example.com/x".into()),
        Subject::Tool("mcp__server__tool".into()),
    ] {
        let _ = policy.decide(&subject, workspace);
    }
}
