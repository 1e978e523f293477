//! Attacks on the audit log (edit, remove, insert, reorder, truncate) and a writer killed
//! mid-stream, against real files.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_host::audit::{AuditError, AuditLog, Event, verify};

fn event(i: u64) -> Event {
    Event::Request {
        request: format!("{i:032x}"),
        actor: "dev1example".into(),
        action: serde_json::json!({"type": "run", "argv": ["echo", i.to_string()], "cwd": "."}),
        action_hash: "ab".repeat(32),
        decision: "ask".into(),
        reason: "no rule allows `echo`".into(),
        rule: None,
    }
}

fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        log.append(1_767_225_600_000 + i, event(i)).unwrap();
    }
    (dir, path)
}

/// Appends the start of a record and no more, as a write cut short leaves it.
fn append_half_a_record(path: &Path) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut file, b"{\"seq\":99,\"time_ms\":").unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn an_intact_log_verifies_and_reopens_where_it_ended() {
    let (_dir, path) = log_with(5);
    assert_eq!(verify(&path).unwrap().records, 5);
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.seq(), 5);
    log.append(1, event(6)).unwrap();
    assert_eq!(verify(&path).unwrap().records, 6);
}

/// A log of `n` records whose head names record `n`, followed by `more` records, as a writer
/// stopped between its records and their head leaves it.
fn log_with_head_behind(n: u64, more: u64) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = log_with(n);
    let head = path.with_extension("head");
    let at_n = std::fs::read(&head).unwrap();
    let log = AuditLog::open(&path).unwrap();
    for i in n + 1..=n + more {
        log.append(1_767_225_600_000 + i, event(i)).unwrap();
    }
    drop(log);
    std::fs::write(&head, &at_n).unwrap();
    (dir, path)
}

#[test]
fn opening_shows_each_record_once_in_order_also_when_it_completes_the_head() {
    let (_dir, path) = log_with_head_behind(3, 2);
    assert!(matches!(verify(&path), Err(AuditError::Head { last: 5, head: 3, .. })));
    let mut seen = Vec::new();
    let log = AuditLog::open_with(&path, &mut |r| seen.push((r.seq, r.time_ms))).unwrap();
    assert!(log.recovered.is_some());
    let expected: Vec<(u64, u64)> = (1..=5).map(|i| (i, 1_767_225_600_000 + i)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn an_open_that_cuts_a_torn_line_and_completes_the_head_says_both() {
    let (_dir, path) = log_with_head_behind(3, 2);
    append_half_a_record(&path);
    let log = AuditLog::open(&path).unwrap();
    let said = log.recovered.clone().unwrap();
    assert!(
        said.contains("cut a torn last line") && said.contains("moved from record 3 to 5"),
        "{said}"
    );
    drop(log);
    assert_eq!(verify(&path).unwrap().records, 5);
}

#[test]
fn a_line_being_written_while_a_host_holds_the_log_is_left_out_not_called_torn() {
    let (_dir, path) = log_with(3);
    let log = AuditLog::open(&path).unwrap();
    // A record half-way through its write, as another process reading the log may see it.
    append_half_a_record(&path);
    assert_eq!(verify(&path).unwrap().records, 3);
    // With no writer holding the log, the same line is a torn write.
    drop(log);
    assert!(
        matches!(verify(&path), Err(AuditError::Malformed { line: 4, ref reason }) if reason.contains("torn")),
        "{:?}",
        verify(&path)
    );
}

#[test]
fn an_edited_record_is_named() {
    let (_dir, path) = log_with(5);
    let mut l = lines(&path);
    l[2] = l[2].replace("no rule allows", "a rule allows");
    write_lines(&path, &l);
    assert!(
        matches!(verify(&path), Err(AuditError::Edited { seq: 4, previous: 3 })),
        "{:?}",
        verify(&path)
    );
}

#[test]
fn an_edited_last_record_is_caught_by_the_head() {
    let (_dir, path) = log_with(5);
    let mut l = lines(&path);
    l[4] = l[4].replace("\"ask\"", "\"allow\"");
    write_lines(&path, &l);
    assert!(matches!(
        verify(&path),
        Err(AuditError::Head { what: "the last record was edited", .. })
    ));
}

#[test]
fn removed_inserted_and_reordered_records_are_named() {
    let (_dir, path) = log_with(6);
    let original = lines(&path);

    let mut removed = original.clone();
    removed.remove(2);
    write_lines(&path, &removed);
    assert!(matches!(
        verify(&path),
        Err(AuditError::Sequence { expected: 3, found: 4, what: "a record was removed", .. })
    ));

    let mut inserted = original.clone();
    inserted.insert(3, original[2].clone());
    write_lines(&path, &inserted);
    assert!(matches!(
        verify(&path),
        Err(AuditError::Sequence { what: "a record was inserted (or repeated)", .. })
    ));

    let mut reordered = original.clone();
    reordered.swap(1, 2);
    write_lines(&path, &reordered);
    assert!(matches!(
        verify(&path),
        Err(AuditError::Sequence { what: "records were reordered", .. })
    ));

    let mut truncated = original.clone();
    truncated.truncate(4);
    write_lines(&path, &truncated);
    assert!(matches!(
        verify(&path),
        Err(AuditError::Head { what: "the last records were removed", .. })
    ));

    write_lines(&path, &original);
    assert_eq!(verify(&path).unwrap().records, 6);
}

#[test]
fn a_garbled_or_overlong_line_is_named_by_its_number() {
    let (_dir, path) = log_with(4);
    let original = lines(&path);
    for (bad, reason) in [("x".repeat(2 << 20), "too long"), ("{\"seq\":".into(), "EOF")] {
        let mut l = original.clone();
        l.insert(2, bad);
        write_lines(&path, &l);
        match verify(&path) {
            Err(AuditError::Malformed { line: 3, reason: r }) if r.contains(reason) => {}
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn a_torn_last_line_is_reported_then_cut_on_open() {
    let (_dir, path) = log_with(3);
    append_half_a_record(&path);
    assert!(matches!(verify(&path), Err(AuditError::Malformed { line: 4, .. })));
    let log = AuditLog::open(&path).unwrap();
    assert!(log.recovered.is_some());
    assert_eq!(log.seq(), 3);
    drop(log);
    assert_eq!(verify(&path).unwrap().records, 3);
}

#[test]
fn a_tail_longer_than_any_record_is_damage_and_is_not_cut() {
    let (_dir, path) = log_with(3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(bytes.len() + (1 << 20) + 2, b'x');
    std::fs::write(&path, &bytes).unwrap();
    let said = |r: Result<_, AuditError>| match r {
        Err(AuditError::Malformed { line: 4, reason }) => reason,
        other => panic!("{other:?}"),
    };
    assert!(said(verify(&path).map(|_| ())).contains("not a torn write"));
    assert!(said(AuditLog::open(&path).map(|_| ())).contains("not a torn write"));
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len(), "nothing was cut");
}

#[test]
fn one_writer_at_a_time() {
    let (_dir, path) = log_with(1);
    let _first = AuditLog::open(&path).unwrap();
    assert!(matches!(AuditLog::open(&path), Err(AuditError::Locked(_))));
}

#[test]
fn the_cli_says_which_record() {
    let (dir, path) = log_with(4);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .args(args)
            .env("AGENT_HOST_HOME", dir.path())
            .output()
            .unwrap()
    };
    let log = path.to_str().unwrap();
    let ok = run(&["audit", "verify", "--log", log]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("4 records intact"));
    let tail = run(&["audit", "tail", "-n", "2", "--log", log]);
    let text = String::from_utf8_lossy(&tail.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("#4") && text.contains("2026-01-01T00:00:00Z"), "{text}");
    let mut l = lines(&path);
    l[0] = l[0].replace("dev1example", "dev1forged");
    write_lines(&path, &l);
    let bad = run(&["audit", "verify", "--log", log]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("record 1 was edited"));
}

/// Run as a child by `a_killed_writer_leaves_what_the_next_open_completes`: appends until killed, each record
/// synced, or (`AUDIT_WRITER_DEFERRED`) synced a few records at a time as a host does.
#[test]
fn audit_writer_child() {
    let Some(path) = std::env::var_os("AUDIT_WRITER_CHILD") else { return };
    let deferred = std::env::var_os("AUDIT_WRITER_DEFERRED").is_some();
    let log = AuditLog::open(Path::new(&path)).unwrap();
    std::fs::write(Path::new(&path).with_extension("ready"), b"").unwrap();
    for i in 1.. {
        if deferred {
            log.append_deferred(i, event(i)).unwrap();
            if i % 7 == 0 {
                log.sync().unwrap();
            }
        } else {
            log.append(i, event(i)).unwrap();
        }
    }
}

#[test]
fn a_killed_writer_leaves_what_the_next_open_completes() {
    killed_writer(false);
}

#[test]
fn a_killed_writer_of_deferred_records_leaves_what_the_next_open_completes() {
    killed_writer(true);
}

fn killed_writer(deferred: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut torn = 0;
    for round in 0..5u64 {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if deferred {
            command.env("AUDIT_WRITER_DEFERRED", "1");
        }
        let mut child = command
            .args(["--exact", "audit_writer_child", "--nocapture"])
            .env("AUDIT_WRITER_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ready = path.with_extension("ready");
        let start = std::time::Instant::now();
        while !ready.exists() && start.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::remove_file(&ready).ok();
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 17));
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        // Whatever instant it died at, the log verifies; or its head lags by the records being
        // written (one when each is synced, those since the last sync otherwise); or, killed
        // during a write that crossed a page, its last line is torn there. Reopening completes
        // the head or cuts the torn line, and says so; then it verifies.
        let len = std::fs::metadata(&path).unwrap().len();
        match verify(&path) {
            Ok(v) => assert!(v.records > 0),
            Err(AuditError::Head { last, head, what }) => {
                assert_eq!(what, agent_host::audit::AHEAD_OF_HEAD, "round {round}");
                if deferred {
                    assert!(last - head <= 8, "round {round}: {last} past {head}");
                } else {
                    assert_eq!(last, head + 1, "round {round}");
                }
            }
            Err(AuditError::Malformed { line, reason }) if reason.contains("torn") => {
                assert_eq!(len % 4096, 0, "round {round}: torn at {len}, not a page boundary");
                assert_eq!(line, newlines(&path) + 1, "round {round}: the last line");
                torn += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        let reopened = AuditLog::open(&path).unwrap();
        if torn > 0 {
            assert!(
                reopened.recovered.as_ref().is_some_and(|r| r.contains("torn")),
                "round {round}"
            );
        }
        drop(reopened);
        assert!(verify(&path).is_ok(), "round {round}");
        torn = 0;
    }
}

/// How many newlines a file holds.
fn newlines(path: &Path) -> u64 {
    std::fs::read(path).unwrap().iter().filter(|&&b| b == b'\n').count() as u64
}

#[test]
fn a_torn_head_slot_leaves_the_record_before_and_reopening_completes_it() {
    let (_dir, path) = log_with(5);
    let head = path.with_extension("head");
    let mut bytes = std::fs::read(&head).unwrap();
    assert_eq!(bytes.len(), 4096 + 192, "two slots, a block apart");
    // Record 5 went to the second slot (odd seq); tear it as a crash mid-write would.
    bytes[4096 + 10..4096 + 40].fill(b'#');
    std::fs::write(&head, &bytes).unwrap();
    assert!(
        matches!(
            verify(&path),
            Err(AuditError::Head { last: 5, head: 4, what: agent_host::audit::AHEAD_OF_HEAD })
        ),
        "{:?}",
        verify(&path)
    );
    let reopened = AuditLog::open(&path).unwrap();
    assert!(reopened.recovered.is_some());
    drop(reopened);
    assert_eq!(verify(&path).unwrap().records, 5);
    // Both slots torn: no head is believed.
    std::fs::write(&head, vec![b'#'; bytes.len()]).unwrap();
    assert!(matches!(verify(&path), Err(AuditError::Malformed { line: 0, .. })));
}

#[test]
fn a_head_of_the_earlier_single_object_form_still_verifies_and_is_rewritten() {
    let (_dir, path) = log_with(3);
    let head = path.with_extension("head");
    let bytes = std::fs::read(&head).unwrap();
    let slot = std::str::from_utf8(&bytes[4096..]).unwrap().trim_end();
    let record: serde_json::Value = serde_json::from_str(slot).unwrap();
    assert_eq!(record["seq"], 3);
    let legacy = serde_json::json!({ "seq": 3, "hash": record["hash"] });
    std::fs::write(&head, serde_json::to_vec(&legacy).unwrap()).unwrap();
    assert_eq!(verify(&path).unwrap().records, 3);
    let log = AuditLog::open(&path).unwrap();
    log.append(4, event(4)).unwrap();
    drop(log);
    assert_eq!(std::fs::read(&head).unwrap().len(), bytes.len());
    assert_eq!(verify(&path).unwrap().records, 4);
}

#[test]
fn deferred_records_are_written_at_once_and_in_the_head_from_the_sync() {
    use agent_host::audit::MAX_UNSYNCED;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=3 {
        log.append_deferred(i, event(i)).unwrap();
    }
    assert_eq!(lines(&path).len(), 3, "written at once");
    // While the writer holds the log, records past the head are its unsynced ones.
    let seen = verify(&path).unwrap();
    assert_eq!((seen.records, seen.unsynced), (3, 3));
    log.sync().unwrap();
    let seen = verify(&path).unwrap();
    assert_eq!((seen.records, seen.unsynced), (3, 0));
    // However many wait, a writer lets no more than MAX_UNSYNCED go unsynced.
    for i in 4..=200 {
        log.append_deferred(i, event(i)).unwrap();
        assert!(verify(&path).unwrap().unsynced <= MAX_UNSYNCED, "at {i}");
    }
    // A writer that stops syncs what it wrote.
    drop(log);
    let seen = verify(&path).unwrap();
    assert_eq!((seen.records, seen.unsynced), (200, 0));
}

#[test]
fn more_records_past_the_head_than_a_stop_leaves_do_not_verify() {
    use agent_host::audit::MAX_AHEAD;
    // Records 11..=10+MAX_AHEAD look written and unsynced.
    let (_dir, path) = log_with_head_behind(10, MAX_AHEAD);
    let head = path.with_extension("head");
    let at_ten = std::fs::read(&head).unwrap();
    assert!(matches!(
        verify(&path),
        Err(AuditError::Head { head: 10, what: agent_host::audit::AHEAD_OF_HEAD, .. })
    ));
    let log = AuditLog::open(&path).unwrap();
    assert!(log.recovered.is_some());
    log.append(11 + MAX_AHEAD, event(11 + MAX_AHEAD)).unwrap();
    drop(log);
    // One more than that is no trace of a stop: the host refuses to open it.
    std::fs::write(&head, &at_ten).unwrap();
    assert!(matches!(AuditLog::open(&path), Err(AuditError::Head { head: 10, .. })));
}

#[test]
fn a_torn_slot_leaves_the_head_of_the_sync_before_however_far_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let head = path.with_extension("head");
    let slot_of = |seq: u64| {
        let bytes = std::fs::read(&head).unwrap();
        [0, 4096].into_iter().find(|&at| {
            String::from_utf8_lossy(&bytes[at..at + 192]).contains(&format!("\"seq\":{seq},"))
        })
    };
    // Heads put on disk at 3, 5 and 7: the same parity, each into the slot the head on disk
    // is not in.
    for (from, to) in [(1, 3), (4, 5), (6, 7)] {
        for i in from..=to {
            log.append_deferred(i, event(i)).unwrap();
        }
        log.sync().unwrap();
        log.sync_head().unwrap();
    }
    let seven = slot_of(7).unwrap();
    assert_eq!(slot_of(5), Some(4096 - seven));
    // Heads written and not yet put on disk all go to the other slot: 7's stays as it is.
    for i in 8..=9 {
        log.append_deferred(i, event(i)).unwrap();
        log.sync().unwrap();
        assert_eq!(slot_of(7), Some(seven), "at {i}");
        assert_eq!(slot_of(i), Some(4096 - seven), "at {i}");
    }
    log.sync_head().unwrap();
    drop(log);
    // Torn, the newest leaves the one before it.
    let mut bytes = std::fs::read(&head).unwrap();
    let nine = slot_of(9).unwrap();
    bytes[nine + 10..nine + 40].fill(b'#');
    std::fs::write(&head, &bytes).unwrap();
    assert!(
        matches!(
            verify(&path),
            Err(AuditError::Head { last: 9, head: 7, what: agent_host::audit::AHEAD_OF_HEAD })
        ),
        "{:?}",
        verify(&path)
    );
    drop(AuditLog::open(&path).unwrap());
    assert_eq!(verify(&path).unwrap().records, 9);
}
