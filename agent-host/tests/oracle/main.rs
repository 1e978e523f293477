//! The effects oracle: the proof that "allowed without asking" means "has no effect".
//!
//! Every command line the policy allows is run in a throwaway bubblewrap sandbox under
//! `strace -f`, with a sample workspace, a home full of canary secrets and a secret outside
//! both, all mounted read-only. A line fails when it wrote or tried to write anything, ran a
//! program other than the command words the policy judged (or any program from the sample
//! world), opened a canary or printed its token, or reached for the network.
//!
//! The corpus (`corpus.rs`) is generated from the read-only programs' own `--help`: every
//! option, alone and with bad values in every spelling GNU accepts, plus sed's commands, find's
//! primaries, and the shell shapes that change what a line does. `tests/corpus/everyday.txt`
//! holds what an agent runs to look around a project; nearly all of it must stay allowed.
//!
//! Needs `bwrap` and `strace` (the test script installs both); without them, or where the
//! kernel refuses the sandbox its namespaces, the oracle prints `SKIPPED:` and passes. Every
//! allowed line runs (about 3.5 minutes on a 2-core machine); `ORACLE_SLICE=N` runs a fixed
//! deterministic slice of about N lines instead, for a quick look while changing the policy.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod corpus;
mod sandbox;
mod trace;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use agent_host::policy::{Decision, Policy, Settings, Subject, Trust, Verdict};

use corpus::Entry;
use sandbox::{Outcome, World};
use trace::{Finding, Kind, Observed, Rules};

/// Offending lines listed in a failure (`ORACLE_SHOW=N` lists more).
const SHOWN: usize = 30;
/// The share of the everyday corpus that must stay allowed.
const EVERYDAY_ALLOWED: f64 = 0.95;

fn policy(world: &World, rule: Option<&str>) -> Policy {
    let allow: Vec<&str> = rule.into_iter().collect();
    let permissions = serde_json::json!({ "allow": allow, "ask": [], "deny": [] });
    let text = serde_json::json!({ "permissions": permissions }).to_string();
    let settings = Settings::parse(&text, &world.ws.join(".claude/settings.json")).unwrap();
    Policy::new(&world.ws, vec![(settings, Trust::Trusted)], None, vec![world.host_state.clone()])
        .with_home(&world.home)
}

/// Every entry's decision, each under its own rule (one policy per distinct rule).
fn decide_all(world: &World, entries: &[Entry]) -> Vec<Decision> {
    let mut policies: HashMap<Option<String>, Policy> = HashMap::new();
    entries
        .iter()
        .map(|e| {
            let p =
                policies.entry(e.rule.clone()).or_insert_with(|| policy(world, e.rule.as_deref()));
            p.decide(&Subject::Bash(e.line.clone()), &world.ws)
        })
        .collect()
}

/// What the oracle made of one line.
struct Report {
    findings: Vec<Finding>,
    /// Writes and runs of a line an explicit rule allowed: the rule vouches for them.
    waived: Vec<Finding>,
    timed_out: bool,
    seconds: f64,
}

/// Whether strace saw the first process to its end (`+++ exited` / `+++ killed`); a trace that
/// stops before that (strace itself died) proves nothing about the rest of the line.
fn complete(trace: &str) -> bool {
    let Some(first) = trace.split_whitespace().next() else { return false };
    trace.lines().any(|l| {
        l.strip_prefix(first).is_some_and(|r| {
            r.trim_start().starts_with("+++ exited") || r.trim_start().starts_with("+++ killed")
        })
    })
}

fn judge(world: &World, programs: &[String], explicit: bool, outcome: &Outcome) -> Report {
    let mut findings = Vec::new();
    if outcome.status.is_none() {
        findings.push(Finding {
            kind: Kind::Unobserved,
            detail: "never ran: its sandbox stopped".into(),
        });
    } else if !outcome.timed_out() && !complete(&outcome.trace) {
        findings.push(Finding {
            kind: Kind::Unobserved,
            detail: format!("the trace stops early (exit status {:?})", outcome.status),
        });
    }
    let calls = trace::parse(&outcome.trace);
    let rules = Rules { world: &world.root, canaries: &world.canaries, tokens: &world.tokens };
    let seen = Observed {
        calls: &calls,
        outputs: &outcome.outputs,
        stdout: &outcome.stdout,
        stderr: &outcome.stderr,
    };
    findings.extend(trace::judge(programs, &seen, &rules));
    let (waived, findings) =
        findings.into_iter().partition(|f| explicit && matches!(f.kind, Kind::Exec | Kind::Write));
    Report { findings, waived, timed_out: outcome.timed_out(), seconds: outcome.seconds }
}

/// Runs the lines with their decisions through the sandbox; `None` when it cannot run here.
fn oracle(world: &World, lines: &[(&Entry, &Decision)]) -> Option<Vec<Report>> {
    if let Err(why) = sandbox::probe(world) {
        println!("SKIPPED: the effects oracle cannot run here: {why}");
        return None;
    }
    let texts: Vec<&str> = lines.iter().map(|(e, _)| e.line.as_str()).collect();
    Some(sandbox::run(world, &texts, |i, outcome| {
        let d = lines[i].1;
        judge(world, &d.programs, d.explicit, &outcome)
    }))
}

/// The lines to run: all, or with a `limit`, every hand-written shape and an even stride
/// through the generated ones, to about `limit` lines.
fn slice<T>(items: Vec<(&Entry, T)>, limit: Option<usize>) -> (Vec<(&Entry, T)>, String) {
    let total = items.len();
    let Some(limit) = limit.filter(|l| *l < total) else {
        return (items, format!("running all {total} allowed lines"));
    };
    let generated = |e: &Entry| ["options:", "sed", "find"].iter().any(|p| e.origin.starts_with(p));
    let kept = items.iter().filter(|(e, _)| !generated(e)).count();
    let pool = total - kept;
    let step = pool.div_ceil(limit.saturating_sub(kept).max(1)).max(1);
    let mut n = 0;
    let chosen: Vec<(&Entry, T)> = items
        .into_iter()
        .filter(|(e, _)| {
            if !generated(e) {
                return true;
            }
            n += 1;
            (n - 1) % step == 0
        })
        .collect();
    let msg = format!(
        "running a fixed slice of {} of {total} allowed lines (all {kept} hand-written shapes, \
         every {step}th generated line), as ORACLE_SLICE asks",
        chosen.len()
    );
    (chosen, msg)
}

/// The failure text: up to `SHOWN` offending lines, what they did, and why they were allowed.
fn describe(world: &World, bad: &[(&Entry, &Decision, &Report)]) -> String {
    let shown = std::env::var("ORACLE_SHOW").ok().and_then(|n| n.parse().ok()).unwrap_or(SHOWN);
    let root = world.root.display().to_string();
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for (_, _, r) in bad {
        let mut kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            *by_kind.entry(k).or_default() += 1;
        }
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    let mut out = format!("{} allowed lines had effects ({})\n", bad.len(), kinds.join(", "));
    for (e, d, r) in bad.iter().take(shown) {
        out.push_str(&format!("\n  {:?}  [{}]\n    allowed: {}\n", e.line, e.origin, d.reason));
        for f in r.findings.iter().take(4) {
            out.push_str(&format!("    {}: {}\n", f.kind, f.detail.replace(&root, "<world>")));
        }
        if r.findings.len() > 4 {
            out.push_str(&format!("    ... and {} more\n", r.findings.len() - 4));
        }
    }
    if bad.len() > shown {
        out.push_str(&format!("\n  ... and {} more lines\n", bad.len() - shown));
    }
    out
}

/// Runs `lines`, prints the counts, and returns the offenders' description, if any.
fn run_and_report(world: &World, lines: &[(&Entry, &Decision)]) -> Option<String> {
    let started = Instant::now();
    let reports = oracle(world, lines)?;
    let elapsed = started.elapsed().as_secs_f64();
    let timed_out: Vec<&str> = lines
        .iter()
        .zip(&reports)
        .filter(|(_, r)| r.timed_out)
        .map(|((e, _), _)| e.line.as_str())
        .collect();
    let waived = reports.iter().filter(|r| !r.waived.is_empty()).count();
    let busy: f64 = reports.iter().map(|r| r.seconds).sum();
    let bad: Vec<(&Entry, &Decision, &Report)> = lines
        .iter()
        .zip(&reports)
        .filter(|(_, r)| !r.findings.is_empty())
        .map(|((e, d), r)| (*e, *d, r))
        .collect();
    println!(
        "ran {} lines in {elapsed:.1} s ({:.1} ms per line per sandbox, {:.1} ms wall); \
         {} failed; {} hit the {} s limit; {waived} explicit-rule lines had waived effects",
        reports.len(),
        1000.0 * busy / reports.len().max(1) as f64,
        1000.0 * elapsed / reports.len().max(1) as f64,
        bad.len(),
        timed_out.len(),
        sandbox::LINE_TIMEOUT,
    );
    for line in timed_out.iter().take(10) {
        println!("  killed at the time limit: {line:?}");
    }
    let root = world.root.display().to_string();
    for ((e, _), r) in lines.iter().zip(&reports).filter(|(_, r)| !r.waived.is_empty()).take(10) {
        let what = r.waived[0].detail.replace(&root, "<world>");
        println!("  waived for {} ({} effects), e.g. {what}", e.line, r.waived.len());
    }
    (!bad.is_empty()).then(|| describe(world, &bad))
}

#[test]
fn effects_oracle() {
    let started = Instant::now();
    let world = World::build();
    let entries = corpus::generate(&world);
    let generated_in = started.elapsed().as_secs_f64();
    let decided_at = Instant::now();
    let decisions = decide_all(&world, &entries);
    let decided_in = decided_at.elapsed().as_secs_f64();
    let allowed: Vec<(&Entry, &Decision)> =
        entries.iter().zip(&decisions).filter(|(_, d)| d.decision == Verdict::Allow).collect();
    let mut per_origin: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (e, d) in entries.iter().zip(&decisions) {
        let family = e.origin.split(':').next().unwrap_or("").to_string();
        let slot = per_origin.entry(family).or_default();
        slot.0 += 1;
        slot.1 += usize::from(d.decision == Verdict::Allow);
    }
    println!(
        "generated {} lines in {generated_in:.1} s; decided in {decided_in:.1} s; {} allowed",
        entries.len(),
        allowed.len()
    );
    for (family, (n, a)) in &per_origin {
        println!("  {family}: {n} lines, {a} allowed");
    }
    assert!(entries.len() >= 10_000, "the corpus shrank to {} lines", entries.len());
    let limit = std::env::var("ORACLE_SLICE").ok().and_then(|n| n.parse().ok());
    let (run, how) = slice(allowed, limit);
    println!("{how}");
    let failure = run_and_report(&world, &run);
    println!("effects oracle: {:.1} s in all", started.elapsed().as_secs_f64());
    if let Some(failure) = failure {
        panic!("{failure}");
    }
}

#[test]
fn everyday_lines_stay_allowed() {
    let world = World::build();
    let entries = corpus::everyday(include_str!("../corpus/everyday.txt"));
    let decisions = decide_all(&world, &entries);
    let allowed: Vec<(&Entry, &Decision)> =
        entries.iter().zip(&decisions).filter(|(_, d)| d.decision == Verdict::Allow).collect();
    let fraction = allowed.len() as f64 / entries.len() as f64;
    println!(
        "everyday corpus: {} of {} lines allowed ({:.1}%)",
        allowed.len(),
        entries.len(),
        100.0 * fraction
    );
    for (e, d) in entries.iter().zip(&decisions) {
        if d.decision != Verdict::Allow {
            println!("  not allowed ({}): {:?}: {}", d.decision, e.line, d.reason);
        }
    }
    let mut problems = Vec::new();
    if fraction < EVERYDAY_ALLOWED {
        problems.push(format!(
            "only {:.1}% of the everyday corpus is allowed (at least {:.0}% must be)",
            100.0 * fraction,
            100.0 * EVERYDAY_ALLOWED
        ));
    }
    problems.extend(run_and_report(&world, &allowed));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The oracle can fail: known-bad lines, run straight through the sandbox and the checker with
/// the programs given by hand, are each flagged for the right reason, and plain reads are not.
#[test]
fn oracle_catches_known_bad_lines() {
    use Kind::{Canary, Exec, Network, Write};
    let world = World::build();
    let cases: &[(&str, &[&str], &[Kind])] = &[
        ("sed -n 1p -e '1e touch /tmp/pwned' README.md", &["sed"], &[Exec, Write]),
        ("sed -n 1p -i README.md", &["sed"], &[Write]),
        (r"find . -maxdepth 0 -exec touch pwned \;", &["find"], &[Exec, Write]),
        (
            "echo ' -exec touch /tmp/pwned ;' | xargs find .",
            &["echo", "xargs", "find"],
            &[Exec, Write],
        ),
        ("BASH_ENV=./x.sh bash -c ls", &["bash", "ls"], &[Exec, Write]),
        ("PATH=bin:$PATH ls", &["ls"], &[Exec, Write]),
        ("cat -v ~/.ssh/id_rsa", &["cat"], &[Canary]),
        ("cat keylink", &["cat"], &[Canary]),
        ("cd link-out && cat ../.aws/credentials", &["cd", "cat"], &[Canary]),
        ("wc --files0-from=keylink", &["wc"], &[Canary]),
        ("diff --from-file=../outside/secret.txt README.md", &["diff"], &[Canary]),
        ("grep -r x ~", &["grep"], &[Canary]),
        ("echo x >> .git/config", &["echo"], &[Write]),
        ("sort -o out.txt data.csv", &["sort"], &[Write]),
        ("date -s 2000-01-01", &["date"], &[Write]),
        ("bash -c 'exec 3<>/dev/tcp/127.0.0.1/9'", &["bash"], &[Network]),
        // Controls: plain reads have no effect.
        ("cat README.md", &["cat"], &[]),
        ("ls -la src && pwd", &["ls", "pwd"], &[]),
        ("grep -rn TODO src | head -n 5", &["grep", "head"], &[]),
        ("find . -name '*.rs'", &["find"], &[]),
        ("sed -n '1,3p' src/main.rs", &["sed"], &[]),
        ("egrep -c fn src/lib.rs", &["egrep", "grep"], &[]),
        ("id; whoami; date; uname -a", &["id", "whoami", "date", "uname"], &[]),
        ("cat src/lib.rs > /dev/null 2>&1", &["cat"], &[]),
    ];
    let entries: Vec<Entry> = cases
        .iter()
        .map(|(line, _, _)| Entry { line: (*line).to_string(), origin: "known".into(), rule: None })
        .collect();
    let lines: Vec<&str> = entries.iter().map(|e| e.line.as_str()).collect();
    if let Err(why) = sandbox::probe(&world) {
        println!("SKIPPED: the effects oracle cannot run here: {why}");
        return;
    }
    let reports = sandbox::run(&world, &lines, |i, outcome| {
        let programs: Vec<String> = cases[i].1.iter().map(ToString::to_string).collect();
        judge(&world, &programs, false, &outcome)
    });
    let root = world.root.display().to_string();
    let mut wrong = Vec::new();
    for ((line, _, expected), report) in cases.iter().zip(&reports) {
        let mut kinds: Vec<Kind> = report.findings.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        let mut want = expected.to_vec();
        want.sort();
        println!("{line:?}: {kinds:?}");
        for f in &report.findings {
            println!("    {}: {}", f.kind, f.detail.replace(&root, "<world>"));
        }
        if kinds != want {
            let details: Vec<String> = report
                .findings
                .iter()
                .map(|f| format!("{}: {}", f.kind, f.detail.replace(&root, "<world>")))
                .collect();
            wrong.push(format!(
                "{line:?}: expected {want:?}, got {kinds:?}\n      {}",
                details.join("\n      ")
            ));
        }
    }
    assert!(wrong.is_empty(), "the oracle misjudged:\n  {}", wrong.join("\n  "));
}
