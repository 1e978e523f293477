//! A walk through the protocol with two in-memory parties: a device asks the host to run a
//! command, the host verifies the frame, then refuses a tampered copy and a replay.
//!
//! Run: `cargo run -p protocol --example walkthrough`

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::envelope::{SealContext, Sealed, VerifyContext, seal};
use protocol::{
    Action, DeviceId, HostId, Message, ReplayWindow, Request, RequestId, SecretKey, action_hash,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Fixed seeds keep the output reproducible; real keys come from the OS generator.
    let host = SecretKey::from_seed(&[0x22; 32]);
    let device = SecretKey::from_seed(&[0x11; 32]);
    let (host_key, device_key) = (host.public_key(), device.public_key());
    println!("host   {}  fingerprint {}", HostId::new(host_key), host_key.fingerprint());
    println!("device {}  fingerprint {}", DeviceId::new(device_key), device_key.fingerprint());

    let action = Action::Run {
        argv: vec!["cargo".into(), "test".into()],
        cwd: ".".into(),
        env: Default::default(),
    };
    println!("\naction {}\nhash   {}", serde_json::to_string(&action)?, action_hash(&action));
    let request = Message::Request(Request::Action { id: RequestId([7; 16]), action });

    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let ctx = SealContext {
        recipient: &host_key,
        counter: 1,
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
    };
    let frame = seal(&device, &ctx, &request)?;
    println!("\ndevice sealed a {}-byte frame", frame.len());

    // The host: decode the shape, look up the claimed sender among paired keys, verify.
    let mut window = ReplayWindow::new();
    let open = |bytes: &[u8], window: &mut ReplayWindow| {
        let sealed = Sealed::decode(bytes)?;
        assert_eq!(sealed.sender(), device_key.as_bytes(), "a paired device");
        sealed.verify(&device_key, &VerifyContext::new(&host_key, now), window)
    };
    let verified = open(&frame, &mut window)?;
    println!("host verified counter {}: {:?}", verified.header().counter, verified.message());

    let mut tampered = frame.clone();
    let last_payload_byte = tampered.len() - 65;
    tampered[last_payload_byte] ^= 1;
    println!(
        "tampered copy: {}",
        open(&tampered, &mut window)
            .map(|_| "accepted?!".to_string())
            .unwrap_or_else(|e| e.to_string())
    );
    println!(
        "replayed copy: {}",
        open(&frame, &mut window)
            .map(|_| "accepted?!".to_string())
            .unwrap_or_else(|e| e.to_string())
    );
    Ok(())
}
