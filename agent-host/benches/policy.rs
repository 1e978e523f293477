//! Policy decision time for a typical compound command against 50 rules.
//!
//! Run: `cargo bench -p agent-host --bench policy`. Results go in BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;

use agent_host::policy::{Policy, Settings, Subject, Trust};
use criterion::{Criterion, criterion_group, criterion_main};

fn rules() -> String {
    let mut allow: Vec<String> = (0..20).map(|i| format!("\"Bash(tool{i} *)\"")).collect();
    allow.extend(
        [
            "\"Bash(cargo test *)\"",
            "\"Bash(npm run test *)\"",
            "\"Bash(git status)\"",
            "\"Edit(src/**)\"",
        ]
        .map(String::from),
    );
    allow.extend((0..6).map(|i| format!("\"Read(docs{i}/**)\"")));
    let ask: Vec<String> = (0..10).map(|i| format!("\"Bash(deploy{i} *)\"")).collect();
    let mut deny: Vec<String> = (0..8).map(|i| format!("\"Bash(danger{i} *)\"")).collect();
    deny.extend(["\"Read(.env)\"", "\"Read(~/.ssh/**)\""].map(String::from));
    assert_eq!(allow.len() + ask.len() + deny.len(), 50);
    format!(
        r#"{{"permissions":{{"allow":[{}],"ask":[{}],"deny":[{}]}}}}"#,
        allow.join(","),
        ask.join(","),
        deny.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = dir.path().canonicalize().expect("canonical");
    std::fs::create_dir_all(ws.join("src")).expect("mkdir");
    let settings = Settings::parse(&rules(), &ws.join("settings.json")).expect("settings parse");
    let policy = Policy::new(&ws, vec![(settings, Trust::Trusted)], None, vec![]);
    let mut group = c.benchmark_group("policy decision, 50 rules");
    std::fs::write(ws.join("src/lib.rs"), "// TODO\n").expect("write");
    for (name, line) in [
        ("compound: cd && cmd | tail (3 parts)", "cd src && cargo test --release | tail -n 5"),
        (
            "read-only built-ins: cd && grep -rn | head (3 parts)",
            "cd src && grep -rn TODO . | head -n 5",
        ),
        (
            "pipeline: cd && cmd 2>&1 | grep | head (4 parts)",
            "cd src && cargo test --release 2>&1 | grep -v warning | head -n 50",
        ),
    ] {
        let subject = Subject::Bash(line.into());
        assert_eq!(
            policy.decide(&subject, &ws).decision,
            agent_host::policy::Verdict::Allow,
            "{line}"
        );
        group.bench_function(name, |b| {
            b.iter(|| policy.decide(black_box(&subject), black_box(Path::new(&ws))))
        });
    }
    let simple = Subject::Bash("cargo test --release".into());
    group.bench_function("simple bash command", |b| {
        b.iter(|| policy.decide(black_box(&simple), &ws))
    });
    let read = Subject::Read(ws.join("src/lib.rs"));
    group.bench_function("read path", |b| b.iter(|| policy.decide(black_box(&read), &ws)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
