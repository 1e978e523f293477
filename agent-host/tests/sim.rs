//! Deterministic simulation of the host's decision state ([`HostCore`]) with a virtual clock:
//! requesters ask, devices and the person at the machine decide over a network that loses,
//! duplicates and delays their decisions (some naming the wrong action, some arriving after the
//! deadline), requesters withdraw their own requests and others try to, devices sync, and time
//! passes, all drawn from a seed. The simulation keeps its own model of what must happen and
//! checks the core against it after every step:
//!
//! - every call's answer is the model's (taken, not pending, wrong action, lapsed, own request);
//! - nothing is approved without a decision that named its exact action hash, came before it
//!   lapsed, and (under the two-person rule) came from someone other than the device that asked;
//! - every pending action ends exactly once, as the model says (who, which verdict), a lapse
//!   never before its deadline, and once the clock passes every deadline nothing is left waiting;
//! - for each action its audit record (naming the same verdict, decider and action hash) comes
//!   before the devices are told (the same), and both before the requester is woken;
//! - a device's sync lists exactly what waits;
//! - the timer points at the earliest deadline of what waits.
//!
//! `SIM_SEEDS` (default 8) seeds of `SIM_STEPS` (default 2,500) steps run in every test run;
//! `SIM_SEED=N` runs that one seed alone, to reproduce a failure.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use agent_host::approvals::{DecisionError, Pending};
use agent_host::audit::Event;
use agent_host::host_core::{Effect, HostCore};
use protocol::{Action, ActionHash, DeviceId, RequestId, SecretKey, Verdict};

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
/// Times move in ticks, so that some decisions arrive exactly at a deadline.
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

/// The model's view of one request.
#[derive(Debug, Clone)]
struct Model {
    hash: ActionHash,
    by: String,
    expires_at: u64,
    /// How it must end, once the model has settled it: the verdict and who (`None`: lapsed).
    ending: Option<(Verdict, Option<String>)>,
    /// Effects seen for it, in order: "audit", "decided", "settled".
    seen: Vec<&'static str>,
}

/// How often each ending and refusal happened, so a run that exercised nothing fails.
#[derive(Debug, Default)]
struct Seen {
    approved: u64,
    denied: u64,
    lapsed: u64,
    refused: u64,
    withdrawn_by_others: u64,
    synced: u64,
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

struct Sim {
    core: HostCore,
    model: BTreeMap<RequestId, Model>,
    ctx: Ctx,
    seen: Seen,
    /// The last time the core was told; it never goes back.
    now: u64,
    device: DeviceId,
}

impl Sim {
    /// What the model expects of a decision at `at`, mirroring the broker's checks in order:
    /// settled, wrong action, lapsed (which settles the lapse), own request.
    fn expect_decision(
        &mut self,
        at: u64,
        id: RequestId,
        hash: &ActionHash,
        verdict: Verdict,
        by: &str,
    ) -> Result<(), DecisionError> {
        let two_person = self.ctx.two_person;
        let m = self.model.get_mut(&id).unwrap();
        if m.ending.is_some() {
            return Err(DecisionError::NotPending(id));
        }
        if *hash != m.hash {
            return Err(DecisionError::WrongAction(id));
        }
        if at >= m.expires_at {
            return Err(DecisionError::Lapsed(id));
        }
        if two_person && verdict == Verdict::Approve && by == m.by && !by.starts_with("local:") {
            return Err(DecisionError::OwnRequest(id));
        }
        m.ending = Some((verdict, Some(by.to_string())));
        Ok(())
    }

    /// The model's lapses at `at`: everything open whose deadline passed.
    fn lapse(&mut self, at: u64) {
        for m in self.model.values_mut() {
            if m.ending.is_none() && m.expires_at <= at {
                m.ending = Some((Verdict::Deny, None));
            }
        }
    }

    fn advance(&mut self, step: u64, at: u64) {
        if at < self.now {
            self.ctx.fail(step, format!("the simulation went back in time: {at} < {}", self.now));
        }
        self.now = at;
    }

    /// Fires the core's timer at `at` if it is due (and the model's lapses with it).
    fn timer(&mut self, step: u64, at: u64) {
        self.advance(step, at);
        if self.core.poll_timeout().is_some_and(|t| t <= at) {
            self.core.handle_timeout(at);
            self.lapse(at);
            self.drain(step);
        }
    }

    fn decide(&mut self, step: u64, d: &InFlight) {
        self.advance(step, d.arrives_at);
        let expected = self.expect_decision(d.arrives_at, d.id, &d.hash, d.verdict, d.by);
        if matches!(expected, Err(DecisionError::Lapsed(_))) {
            // The core settles the lapse it found, with every other one due by then.
            self.lapse(d.arrives_at);
        }
        let got = self.core.decide(d.arrives_at, d.id, &d.hash, d.verdict, d.by);
        if got != expected {
            self.ctx.fail(step, format!("decision {d:?} gave {got:?}, the model {expected:?}"));
        }
        match got {
            Ok(()) if d.verdict == Verdict::Approve => self.seen.approved += 1,
            Ok(()) => {}
            Err(_) => self.seen.refused += 1,
        }
        self.drain(step);
    }

    fn withdraw(&mut self, step: u64, id: RequestId, by: &str, own_only: bool) {
        let m = &self.model[&id];
        let expected = if m.ending.is_some() || (own_only && by != m.by) {
            Err(DecisionError::NotPending(id))
        } else {
            let hash = m.hash;
            self.expect_decision(self.now, id, &hash, Verdict::Deny, by)
        };
        if matches!(expected, Err(DecisionError::Lapsed(_))) {
            self.lapse(self.now);
        }
        let got = self.core.withdraw(self.now, id, by, own_only);
        if got != expected {
            let what = format!("withdraw of {id} by {by} (own only: {own_only}) gave {got:?}");
            self.ctx.fail(step, format!("{what}, the model {expected:?}"));
        }
        if got.is_ok() && by != self.model[&id].by {
            self.seen.withdrawn_by_others += 1;
        }
        self.drain(step);
    }

    /// Takes the core's effects, checking each against the model.
    fn drain(&mut self, step: u64) {
        while let Some(effect) = self.core.poll_effect() {
            let (id, what) = match &effect {
                Effect::Pending(p) => {
                    if !self.model.contains_key(&p.id) {
                        self.ctx.fail(step, format!("{} shown but never asked", p.id));
                    }
                    continue;
                }
                Effect::Sync { device, pending, .. } => {
                    let open: Vec<RequestId> = self
                        .model
                        .iter()
                        .filter(|(_, m)| m.ending.is_none())
                        .map(|(id, _)| *id)
                        .collect();
                    let listed: Vec<RequestId> = pending.iter().map(|p| p.id).collect();
                    if *device != self.device || listed != open {
                        self.ctx.fail(step, format!("a sync listed {listed:?}, open: {open:?}"));
                    }
                    self.seen.synced += 1;
                    continue;
                }
                Effect::Audit(Event::Approval { request, .. }) => {
                    let id = self.model.keys().find(|id| id.to_string() == *request).copied();
                    let id = id.unwrap_or_else(|| {
                        self.ctx.fail(step, format!("audit of unknown {request}"))
                    });
                    (id, "audit")
                }
                Effect::Audit(other) => {
                    self.ctx.fail(step, format!("unexpected audit record {other:?}"))
                }
                Effect::Decided { request, .. } => (*request, "decided"),
                Effect::Settled(r) => (r.pending.id, "settled"),
                other => self.ctx.fail(step, format!("unexpected effect {other:?}")),
            };
            let now = self.now;
            let m = self.model.get_mut(&id).unwrap();
            let Some((verdict, by)) = m.ending.clone() else {
                self.ctx.fail(step, format!("{id}: {what} while the model has it open"))
            };
            let expected = ["audit", "decided", "settled"][m.seen.len().min(2)];
            if m.seen.len() >= 3 || what != expected {
                self.ctx.fail(step, format!("{id}: {what} after {:?}", m.seen));
            }
            m.seen.push(what);
            let by_text = by.clone().unwrap_or_else(|| "nobody (lapsed)".into());
            let verdict_text = if verdict == Verdict::Approve { "approve" } else { "deny" };
            let matches = match &effect {
                Effect::Audit(Event::Approval { verdict: v, by: b, action_hash, .. }) => {
                    v == verdict_text && *b == by_text && *action_hash == m.hash.to_string()
                }
                Effect::Decided { verdict: v, by: b, .. } => *v == verdict && *b == by,
                Effect::Settled(r) => {
                    r.verdict == verdict && r.by == by && r.pending.action_hash == m.hash
                }
                _ => true,
            };
            if !matches {
                self.ctx.fail(step, format!("{id}: {effect:?}, the model {verdict:?} by {by:?}"));
            }
            if by.is_none() && now < m.expires_at {
                self.ctx.fail(step, format!("{id} lapsed at {now}, before {}", m.expires_at));
            }
            if what == "settled" {
                match (verdict, by.is_some()) {
                    (Verdict::Deny, false) => self.seen.lapsed += 1,
                    (Verdict::Deny, true) => self.seen.denied += 1,
                    _ => {}
                }
            }
        }
    }

    fn check(&self, step: u64) {
        let waiting: Vec<Pending> = self.core.pending();
        let open: Vec<&RequestId> =
            self.model.iter().filter(|(_, m)| m.ending.is_none()).map(|(id, _)| id).collect();
        let listed: Vec<&RequestId> = waiting.iter().map(|p| &p.id).collect();
        if listed != open {
            self.ctx.fail(step, format!("the core has {listed:?} waiting, the model {open:?}"));
        }
        let earliest = waiting.iter().map(|p| p.expires_at_ms).min();
        if self.core.poll_timeout() != earliest {
            let timer = self.core.poll_timeout();
            self.ctx.fail(step, format!("timer at {timer:?}, earliest deadline {earliest:?}"));
        }
        for (id, m) in &self.model {
            let done = m.seen.len() == 3;
            if m.ending.is_some() != done {
                self.ctx.fail(step, format!("{id}: ended {:?}, effects {:?}", m.ending, m.seen));
            }
        }
    }
}

fn action(n: u64) -> Action {
    Action::Run {
        argv: vec!["make".into(), n.to_string()],
        cwd: ".".into(),
        env: Default::default(),
    }
}

fn run(seed: u64, steps: u64) -> Seen {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let two_person = rng.chance(50);
    let mut sim = Sim {
        core: HostCore::new(SecretKey::from_seed(&[8; 32]).public_key(), TIMEOUT_MS, two_person),
        model: BTreeMap::new(),
        ctx: Ctx { seed, two_person },
        seen: Seen::default(),
        now: 1_000_000,
        device: DeviceId::new(SecretKey::from_seed(&[9; 32]).public_key()),
    };
    let mut next_id = 0u64;
    let mut wire: Vec<InFlight> = Vec::new();

    for step in 0..steps {
        match rng.below(20) {
            // Someone asks.
            0..=5 => {
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
                let shown = sim.core.ask(sim.now, pending).unwrap();
                if shown.expires_at_ms != sim.now + TIMEOUT_MS {
                    sim.ctx.fail(step, format!("{id} lapses at {}", shown.expires_at_ms));
                }
                let m = Model {
                    hash: shown.action_hash,
                    by,
                    expires_at: shown.expires_at_ms,
                    ending: None,
                    seen: Vec::new(),
                };
                sim.model.insert(id, m);
                sim.drain(step);
            }
            // A device or the terminal decides something it was shown (or thinks it was).
            6..=11 => {
                // Mostly what still waits; sometimes what was settled long ago.
                let late = rng.chance(20);
                let open: Vec<RequestId> = sim
                    .model
                    .iter()
                    .filter(|(_, m)| late || m.ending.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let id = open[rng.below(open.len() as u64) as usize];
                let hash =
                    if rng.chance(10) { ActionHash([0xee; 32]) } else { sim.model[&id].hash };
                let verdict = if rng.chance(70) { Verdict::Approve } else { Verdict::Deny };
                let by = if rng.chance(25) { LOCAL } else { DEVICES[rng.below(3) as usize] };
                let copies = if rng.chance(10) { 2 } else { 1 };
                for _ in 0..copies {
                    if rng.chance(10) {
                        continue; // lost
                    }
                    let arrives_at = sim.now + rng.below(3 * TIMEOUT_MS / 2 / TICK_MS) * TICK_MS;
                    wire.push(InFlight { arrives_at, id, hash, verdict, by });
                }
            }
            // A requester withdraws its own; or someone else tries to (as a device, only its
            // own may go; giving up on a question goes whoever asked).
            12 | 13 => {
                let any = rng.chance(20);
                let ids: Vec<RequestId> = sim
                    .model
                    .iter()
                    .filter(|(_, m)| any || m.ending.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(&id) = ids.get(rng.below(ids.len().max(1) as u64) as usize) {
                    let by = if rng.chance(60) {
                        sim.model[&id].by.clone()
                    } else {
                        DEVICES[rng.below(3) as usize].to_string()
                    };
                    let own_only = rng.chance(70);
                    sim.withdraw(step, id, &by, own_only);
                }
            }
            // A device syncs.
            14 => {
                sim.core.sync(sim.device, None);
                sim.drain(step);
            }
            // Time passes; what arrived by then is delivered, in the order it arrives.
            _ => {
                let until = sim.now + rng.below(TIMEOUT_MS / 2 / TICK_MS) * TICK_MS;
                let (mut due, later): (Vec<InFlight>, Vec<InFlight>) =
                    wire.drain(..).partition(|d| d.arrives_at <= until);
                wire = later;
                due.sort_by_key(|d| d.arrives_at);
                for d in due {
                    // The core's timer may fire before what arrives at or after a deadline,
                    // or not yet.
                    if rng.chance(50) {
                        sim.timer(step, d.arrives_at);
                    }
                    sim.decide(step, &d);
                }
                sim.timer(step, until);
            }
        }
        sim.check(step);
    }
    // In the end every deadline passes: nothing may be left waiting.
    let end = sim.now + TIMEOUT_MS + 1;
    sim.timer(steps, end);
    sim.check(steps);
    if !sim.core.pending().is_empty() || sim.core.poll_timeout().is_some() {
        let left = sim.core.pending().len();
        sim.ctx.fail(steps, format!("{left} actions still wait after every deadline"));
    }
    sim.seen
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
        // A run that never approved, denied, lapsed, refused, withdrew for another or synced
        // checked too little.
        let exercised = [
            seen.approved,
            seen.denied,
            seen.lapsed,
            seen.refused,
            seen.withdrawn_by_others,
            seen.synced,
        ];
        assert!(exercised.iter().all(|&n| n > 0), "seed {seed} exercised too little: {seen:?}");
        println!("seed {seed}: {seen:?}");
    }
    println!("{} seeds × {steps} steps, every invariant held after every step", seeds.count());
}
