//! Property tests: any valid message survives seal → decode → verify unchanged; arbitrary bytes,
//! and arbitrary edits of a genuine frame, never panic and never verify as something else.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use proptest::prelude::*;
use protocol::envelope::{Sealed, VerifyContext, seal};
use protocol::{
    Action, ActionHash, Blob, Decision, ErrorCode, HostEvent, Message, Pairing, ReplayWindow,
    Request, RequestId, SessionId, Verdict, action_hash,
};

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes, backslashes, controls and astral characters, but no NUL
    // (which the message check refuses in argv, paths and env).
    "[^\u{0}]{0,40}"
}

fn path() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,40}"
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (
            prop::collection::vec(text(), 1..6),
            path(),
            prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", text(), 0..4)
        )
            .prop_map(|(argv, cwd, env)| Action::Run { argv, cwd, env }),
        path().prop_map(|path| Action::ReadFile { path }),
        (path(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(path, c)| Action::WriteFile { path, content: Blob(c) }),
        (path(), "[^\u{0}]{1,20}", text()).prop_map(|(path, old, new)| Action::EditFile {
            path,
            old,
            new
        }),
        path().prop_map(|path| Action::ListDir { path }),
        (any::<[u8; 16]>(), text())
            .prop_map(|(s, data)| Action::SessionInput { session: SessionId(s), data }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<[u8; 16]>(), action()).prop_map(|(id, action)| Message::Request(Request::Action {
            id: RequestId(id),
            action
        })),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(id, t)| Message::Request(
            Request::Cancel { id: RequestId(id), target: RequestId(t) }
        )),
        (any::<[u8; 16]>(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(r, h, approve)| {
            Message::Decision(Decision {
                request: RequestId(r),
                action_hash: ActionHash(h),
                verdict: if approve { Verdict::Approve } else { Verdict::Deny },
                note: None,
            })
        }),
        (any::<[u8; 16]>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(s, seq, data)| Message::Event(HostEvent::Output {
                session: SessionId(s),
                seq,
                data: Blob(data)
            })
        ),
        (any::<Option<[u8; 16]>>(), text()).prop_map(|(r, message)| Message::Event(
            HostEvent::Error { request: r.map(RequestId), code: ErrorCode::Conflict, message }
        )),
        text().prop_map(|reason| Message::Pairing(Pairing::Rejected { reason })),
    ]
}

proptest! {
    #[test]
    fn round_trip(message in message(), counter in 1u64..1_000_000) {
        let host_key = host().public_key();
        let frame = seal(&device(), &to_host(&host_key, counter), &message).unwrap();
        let verified = Sealed::decode(&frame)
            .unwrap()
            .verify(&device().public_key(), &VerifyContext::new(&host_key, NOW_MS), &mut ReplayWindow::new())
            .unwrap();
        prop_assert_eq!(verified.header().counter, counter);
        prop_assert_eq!(verified.sender(), &device().public_key());
        prop_assert_eq!(verified.message(), &message);
    }

    #[test]
    fn action_hash_is_a_function_of_the_action(a in action(), b in action()) {
        // Equal actions hash equal; different actions (almost surely) differ.
        prop_assert_eq!(action_hash(&a) == action_hash(&b), a == b);
        let copy: Action = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
        prop_assert_eq!(action_hash(&copy), action_hash(&a));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = open_at_host(&bytes, NOW_MS, &mut ReplayWindow::new());
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Start from a real header so the decoder gets past the first checks.
        let mut frame = request_frame(1);
        frame.truncate(protocol::envelope::HEADER_LEN);
        frame[90..94].copy_from_slice(&(body.len().saturating_sub(64) as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let result = open_at_host(&frame, NOW_MS, &mut ReplayWindow::new());
        prop_assert!(result.is_err());
    }

    #[test]
    fn edited_frames_never_verify(edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let original = request_frame(1);
        let mut frame = original.clone();
        for (at, xor) in edits {
            let i = at.index(frame.len());
            frame[i] ^= xor;
        }
        prop_assume!(frame != original);
        prop_assert!(open_at_host(&frame, NOW_MS, &mut ReplayWindow::new()).is_err());
    }
}

proptest! {
    #[test]
    fn relay_control_checks_never_panic(
        key in ".{0,80}",
        signature in ".{0,140}",
        devices in prop::collection::vec(".{0,70}", 0..4),
        frame in prop::collection::vec(any::<u8>(), 0..80),
        counter in any::<u64>(),
    ) {
        use protocol::relay::{Side, check_hello, check_register, split_frame};
        prop_assert!(check_hello(Side::Host, &key, &signature, &[1; 32], &[2; 32]).is_err());
        let _ = check_register(&host().public_key(), counter, &devices, &devices, &signature);
        if let Ok((_, _, payload)) = split_frame(&frame) {
            prop_assert_eq!(payload.len(), frame.len() - protocol::relay::HEADER);
        }
    }
}
