//! Deterministic simulation of the host's decision state ([`HostCore`]) with a virtual clock:
//! requesters ask, devices and the person at the machine decide over a network that loses,
//! duplicates, delays and reorders their decisions (some naming the wrong action), requesters
//! withdraw, and time passes, all drawn from a seed. After every step the invariants are
//! checked:
//!
//! - nothing is approved without a decision that named its exact action hash, came before it
//!   lapsed, and (under the two-person rule) came from someone other than the device that asked;
//! - every pending action ends exactly once (approved, denied, withdrawn or lapsed), and once the
//!   clock passes every deadline nothing is left waiting;
//! - for each action, its audit record comes before the devices are told, and both before the
//!   requester is woken;
//! - the timer points at the earliest deadline of what waits.
//!
//! `SIM_SEEDS` (default 8) seeds of `SIM_STEPS` (default 2,500) steps run in every test run;
//! `SIM_SEED=N` runs that one seed alone, to reproduce a failure.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, HashMap, HashSet};

use agent_host::approvals::Pending;
use agent_host::audit::Event;
use agent_host::host_core::{Effect, HostCore};
use protocol::{Action, ActionHash, RequestId, Verdict};

/// xorshift64*: enough randomness for a simulation, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TIMEOUT_MS: u64 = 2_000;
const TICK_MS: u64 = 100;
const DEVICES: [&str; 3] = ["dev1phone", "dev1tablet", "dev1laptop"];
const LOCAL: &str = "local:terminal";

/// A decision on its way to the host.
#[derive(Debug, Clone)]
struct InFlight {
    arrives_at: u64,
    id: RequestId,
    hash: ActionHash,
    verdict: Verdict,
    by: &'static str,
}

/// What the simulation knows about one request.
#[derive(Debug, Clone)]
struct Asked {
    hash: ActionHash,
    by: String,
    expires_at: u64,
    /// Effects seen for it, in order: "audit", "decided", "settled".
    seen: Vec<&'static str>,
    settled: Option<(Verdict, Option<String>)>,
}

fn action(n: u64) -> Action {
    Action::Run {
        argv: vec!["make".into(), n.to_string()],
        cwd: ".".into(),
        env: Default::default(),
    }
}

/// How often each ending and refusal happened, so a run that exercised nothing fails.
#[derive(Debug, Default)]
struct Seen {
    approved: u64,
    denied: u64,
    lapsed: u64,
    refused: u64,
}

fn run(seed: u64, steps: u64) -> Seen {
    let mut seen = Seen::default();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let two_person = rng.chance(50);
    let mut core = HostCore::new(TIMEOUT_MS, two_person);
    let mut now = 1_000_000u64;
    let mut next_id = 0u64;
    let mut asked: BTreeMap<RequestId, Asked> = BTreeMap::new();
    let mut wire: Vec<InFlight> = Vec::new();
    // Decisions that were valid when they arrived (right hash, in time), by request.
    let mut valid_approvals: HashMap<RequestId, HashSet<&'static str>> = HashMap::new();

    let ctx = Ctx { seed, two_person };

    for step in 0..steps {
        match rng.below(10) {
            // Someone asks.
            0..=2 => {
                next_id += 1;
                let id = RequestId(u128::from(next_id).to_be_bytes());
                let a = action(next_id);
                let by = if rng.chance(50) {
                    LOCAL.to_string()
                } else {
                    DEVICES[rng.below(3) as usize].to_string()
                };
                let pending = Pending {
                    id,
                    action_hash: protocol::action_hash(&a),
                    action: a,
                    summary: String::new(),
                    reason: String::new(),
                    preview: None,
                    requested_by: by.clone(),
                    expires_at_ms: 0,
                };
                let shown = core.ask(now, pending).unwrap();
                if shown.expires_at_ms != now + TIMEOUT_MS {
                    ctx.fail(step, format!("{id} lapses at {}", shown.expires_at_ms));
                }
                let record = Asked {
                    hash: shown.action_hash,
                    by,
                    expires_at: shown.expires_at_ms,
                    seen: Vec::new(),
                    settled: None,
                };
                asked.insert(id, record);
            }
            // A device or the terminal decides something it was shown (or thinks it was).
            3..=5 => {
                // Mostly what still waits; sometimes what was settled long ago.
                let late = rng.chance(20);
                let open: Vec<RequestId> = asked
                    .iter()
                    .filter(|(_, a)| late || a.settled.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let id = open[rng.below(open.len() as u64) as usize];
                let hash = if rng.chance(10) { ActionHash([0xee; 32]) } else { asked[&id].hash };
                let verdict = if rng.chance(70) { Verdict::Approve } else { Verdict::Deny };
                let by = if rng.chance(25) { LOCAL } else { DEVICES[rng.below(3) as usize] };
                let copies = if rng.chance(10) { 2 } else { 1 };
                for _ in 0..copies {
                    if rng.chance(10) {
                        continue; // lost
                    }
                    // In steps of a tick, so that some arrive exactly at a deadline.
                    let arrives_at = now + rng.below(3 * TIMEOUT_MS / 2 / TICK_MS) * TICK_MS;
                    wire.push(InFlight { arrives_at, id, hash, verdict, by });
                }
            }
            // A requester withdraws (its own, or any when it gives up).
            6 => {
                let open: Vec<RequestId> =
                    asked.iter().filter(|(_, a)| a.settled.is_none()).map(|(id, _)| *id).collect();
                if let Some(&id) = open.get(rng.below(open.len().max(1) as u64) as usize) {
                    let by = asked[&id].by.clone();
                    core.withdraw(now, id, &by, rng.chance(50)).unwrap();
                }
            }
            // Time passes; what arrived by then is delivered, in whatever order.
            _ => {
                now += rng.below(TIMEOUT_MS / 2 / TICK_MS) * TICK_MS;
                let (mut due, later): (Vec<InFlight>, Vec<InFlight>) =
                    wire.drain(..).partition(|d| d.arrives_at <= now);
                wire = later;
                // In the order they arrive, which the random delays made another than the order
                // they were sent in.
                due.sort_by_key(|d| d.arrives_at);
                for d in due {
                    // The core's timer may fire before what arrives at or after a deadline, or
                    // not yet.
                    if core.poll_timeout().is_some_and(|at| at <= d.arrives_at) && rng.chance(50) {
                        core.handle_timeout(d.arrives_at);
                    }
                    let result = core.decide(d.arrives_at, d.id, &d.hash, d.verdict, d.by);
                    let a = &asked[&d.id];
                    let was_open = a.settled.is_none() && !a.seen.contains(&"settled");
                    let ok = was_open && d.hash == a.hash && d.arrives_at < a.expires_at;
                    let own = two_person
                        && d.verdict == Verdict::Approve
                        && d.by == a.by
                        && !d.by.starts_with("local:");
                    match (&result, ok && !own) {
                        (Ok(()), true) => {
                            if d.verdict == Verdict::Approve {
                                seen.approved += 1;
                                valid_approvals.entry(d.id).or_default().insert(d.by);
                            }
                        }
                        (Err(_), false) => seen.refused += 1,
                        (r, expected) => ctx.fail(
                            step,
                            format!("decision {d:?} gave {r:?}, expected ok={expected}"),
                        ),
                    }
                    drain(&mut core, &mut asked, step, &ctx);
                }
                if core.poll_timeout().is_some_and(|at| at <= now) {
                    core.handle_timeout(now);
                }
            }
        }
        drain(&mut core, &mut asked, step, &ctx);
        check(&core, &asked, &valid_approvals, two_person, step, &ctx);
    }
    // In the end every deadline passes: nothing may be left waiting.
    now += TIMEOUT_MS + 1;
    core.handle_timeout(now);
    drain(&mut core, &mut asked, steps, &ctx);
    if !core.pending().is_empty() || core.poll_timeout().is_some() {
        ctx.fail(
            steps,
            format!("{} actions still wait after every deadline", core.pending().len()),
        );
    }
    for (id, a) in &asked {
        if a.seen != ["audit", "decided", "settled"] {
            ctx.fail(steps, format!("{id} ended as {:?}", a.seen));
        }
        match &a.settled {
            Some((Verdict::Deny, None)) => seen.lapsed += 1,
            Some((Verdict::Deny, Some(_))) => seen.denied += 1,
            _ => {}
        }
    }
    seen
}

/// Takes the core's effects, checking their order for each request.
fn drain(core: &mut HostCore, asked: &mut BTreeMap<RequestId, Asked>, step: u64, ctx: &Ctx) {
    while let Some(effect) = core.poll_effect() {
        let (id, what) = match &effect {
            Effect::Pending(p) => {
                if !asked.contains_key(&p.id) {
                    ctx.fail(step, format!("{} shown but never asked", p.id));
                }
                continue;
            }
            Effect::Audit(Event::Approval { request, .. }) => {
                let id = asked
                    .keys()
                    .find(|id| id.to_string() == *request)
                    .copied()
                    .unwrap_or_else(|| ctx.fail(step, format!("audit of unknown {request}")));
                (id, "audit")
            }
            Effect::Audit(other) => ctx.fail(step, format!("unexpected audit record {other:?}")),
            Effect::Decided { request, .. } => (*request, "decided"),
            Effect::Settled(r) => (r.pending.id, "settled"),
        };
        let a = asked.get_mut(&id).unwrap_or_else(|| ctx.fail(step, format!("{id} unknown")));
        let expected = ["audit", "decided", "settled"][a.seen.len().min(2)];
        if a.seen.len() >= 3 || what != expected {
            ctx.fail(step, format!("{id}: {what} after {:?}", a.seen));
        }
        a.seen.push(what);
        if let Effect::Settled(r) = effect {
            a.settled = Some((r.verdict, r.by));
        }
    }
}

fn check(
    core: &HostCore,
    asked: &BTreeMap<RequestId, Asked>,
    valid_approvals: &HashMap<RequestId, HashSet<&'static str>>,
    two_person: bool,
    step: u64,
    ctx: &Ctx,
) {
    let waiting: Vec<Pending> = core.pending();
    for p in &waiting {
        match asked.get(&p.id) {
            Some(a) if a.settled.is_none() => {}
            _ => ctx.fail(step, format!("{} waits but was settled or never asked", p.id)),
        }
    }
    let earliest = waiting.iter().map(|p| p.expires_at_ms).min();
    if core.poll_timeout() != earliest {
        ctx.fail(
            step,
            format!("timer at {:?}, earliest deadline {earliest:?}", core.poll_timeout()),
        );
    }
    for (id, a) in asked {
        if a.settled.is_none() && !waiting.iter().any(|p| p.id == *id) {
            ctx.fail(step, format!("{id} neither waits nor was settled"));
        }
        if let Some((Verdict::Approve, by)) = &a.settled {
            let by =
                by.as_deref().unwrap_or_else(|| ctx.fail(step, format!("{id} approved by nobody")));
            let valid = valid_approvals.get(id).is_some_and(|s| s.contains(by));
            if !valid {
                ctx.fail(step, format!("{id} approved by {by} without a valid decision of theirs"));
            }
            if two_person && by == a.by && by != LOCAL {
                ctx.fail(step, format!("{id} approved by the device that asked"));
            }
        }
    }
}

/// Names the seed and step of a failure.
struct Ctx {
    seed: u64,
    two_person: bool,
}

impl Ctx {
    fn fail(&self, step: u64, what: String) -> ! {
        panic!("seed {}, step {step} (two-person: {}): {what}", self.seed, self.two_person)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn seeded_runs_keep_every_invariant() {
    let steps = env_u64("SIM_STEPS", 2_500);
    let seeds = match std::env::var("SIM_SEED") {
        Ok(seed) => {
            let seed = seed.parse().unwrap();
            seed..seed + 1
        }
        Err(_) => 0..env_u64("SIM_SEEDS", 8),
    };
    for seed in seeds.clone() {
        let seen = run(seed, steps);
        // A run that never approved, denied, lapsed or refused checked nothing.
        assert!(
            seen.approved > 0 && seen.denied > 0 && seen.lapsed > 0 && seen.refused > 0,
            "seed {seed} exercised too little: {seen:?}"
        );
        println!("seed {seed}: {seen:?}");
    }
    println!("{} seeds × {steps} steps, every invariant held after every step", seeds.count());
}
