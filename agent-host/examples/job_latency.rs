//! How long a command takes through the sandbox started ahead, and its parts, as the host runs
//! it after an approval: `cargo run --release -p agent-host --example job_latency -- [ROUNDS]`
//! (BENCHMARKS.md, "Approval round trip"). Needs bubblewrap and a built `agent-host` binary
//! beside this example (`cargo build --release -p agent-host`). Rounds start 100 ms apart, as
//! approvals come, so each finds a sandbox waiting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use agent_host::exec::{Job, Limits, Sandbox, Scope, WarmPool};
use agent_host::userenv::UserEnv;

fn percentiles(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name:<28} p50 {:>8.3} ms   p99 {:>8.3} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(300), |a| a.parse())?;
    let bin = std::env::current_exe()?;
    let launcher = bin.parent().and_then(|d| d.parent()).map(|d| d.join("agent-host"));
    let launcher = launcher.filter(|p| p.exists()).ok_or_else(|| {
        anyhow::anyhow!("no agent-host binary beside this example: build it first")
    })?;
    let dir = tempfile::tempdir()?;
    let (root, state) = (dir.path().join("ws"), dir.path().join("state"));
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&state)?;
    let settings = dir.path().join("no-settings.json");
    let user = UserEnv::from_host(&settings, Some(state.join("cache")))?;
    let scope = Scope {
        roots: vec![root.canonicalize()?],
        hidden: vec![state.canonicalize()?],
        user,
        layer: Some(launcher.clone()),
    };
    let sandbox = Sandbox::bubblewrap()?;
    let limits = Limits::default();
    let pool = WarmPool::start(&sandbox, &launcher, &scope, &limits)
        .ok_or_else(|| anyhow::anyhow!("no pool"))?;
    anyhow::ensure!(pool.wait_ready(Duration::from_secs(20)), "no sandbox was started ahead");
    let job = Job {
        argv: vec!["true".into()],
        cwd: PathBuf::from(&scope.roots[0]),
        env: BTreeMap::new(),
        network: false,
        timeout: Duration::from_secs(20),
    };
    let mut runs = Vec::new();
    let cancel = Arc::new(AtomicBool::new(false));
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let out = pool.run(&job, &cancel)?;
        runs.push(t.elapsed());
        anyhow::ensure!(out.exit_code == Some(0), "true failed: {out:?}");
    }
    println!("{rounds} rounds, {} in a sandbox started ahead", pool.warm_runs());
    percentiles("the job (true), whole", runs);
    Ok(())
}
