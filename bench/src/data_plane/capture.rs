//! The capture comparison's results (`--capture`): what the Trellis pair
//! adds when the client reaches it by capture rather than as an explicit
//! proxy — added latency at the fixed rate (per round against that round's
//! direct run) and HTTP/1.1 requests per proxy core, medians over the
//! rounds, with capture ÷ explicit. Issue 14's bound: capture costs at most
//! 10 % more added latency and 10 % less throughput. Reported, not judged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use crate::report::{loadavg, machine, median};
use crate::{Bench, Metrics, Target};

/// (metric, label, higher is better)
const ROWS: [(&str, &str, bool); 5] = [
    ("added_p50_ms", "added latency p50 (ms)", false),
    ("added_p99_ms", "added latency p99 (ms)", false),
    ("h1_req_per_core_s", "HTTP/1.1 req/s per proxy core", true),
    ("h1_rps", "HTTP/1.1 req/s (closed loop)", true),
    (
        "cpu_s_per_1k",
        "CPU s per 1k requests at the fixed rate (pair)",
        false,
    ),
];

pub fn report(b: &Bench, samples: Vec<(usize, Target, Metrics)>, started: String) -> Result<()> {
    let direct: BTreeMap<usize, &Metrics> = samples
        .iter()
        .filter(|(_, t, _)| *t == Target::Direct)
        .map(|(r, _, m)| (*r, m))
        .collect();
    let value = |t: Target, key: &str| -> Option<f64> {
        let per_round = samples
            .iter()
            .filter(|(_, tt, _)| *tt == t)
            .filter_map(|(round, _, m)| match key.strip_prefix("added_") {
                Some(p) => {
                    let lat = format!("lat_{p}");
                    Some(m.get(&lat)? - direct.get(round)?.get(&lat)?)
                }
                None => m.get(key).copied(),
            })
            .collect();
        median(per_round)
    };
    let machine = machine(b.cpus);
    let mut md = format!(
        "Run {started} on {} × {}, Linux {}; load average {} at the end. Median of {} round(s), \
         each running direct, explicit proxy and capture in turn; {} rps for {} s (latency), {} s closed loop \
         (HTTP/1.1, {}); {}; one worker per proxy.\n\n\
         | | explicit proxy | capture | capture ÷ explicit |\n|---|---|---|---|\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or(""),
        machine["kernel"].as_str().unwrap_or(""),
        loadavg(),
        b.s.rounds,
        b.a.rate,
        b.s.latency_secs,
        b.s.load_secs,
        b.pin_note,
        if b.certs.is_some() {
            "mTLS between the sidecars"
        } else {
            "plaintext between the sidecars"
        },
    );
    let mut rows = Vec::new();
    for (key, label, higher_better) in ROWS {
        let (explicit, capture) = (value(Target::Trellis, key), value(Target::Capture, key));
        let ratio = match (explicit, capture) {
            (Some(e), Some(c)) if e.abs() > f64::EPSILON => Some(c / e),
            _ => None,
        };
        let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
        let within = ratio.map(|r| if higher_better { r >= 0.9 } else { r <= 1.1 });
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {}{} |",
            cell(explicit),
            cell(capture),
            cell(ratio),
            match within {
                Some(true) => " (within 10 %)",
                Some(false) => " (**beyond 10 %**)",
                None => "",
            }
        );
        rows.push(json!({
            "key": key, "label": label, "explicit": explicit, "capture": capture,
            "ratio": ratio, "within_10_percent": within,
        }));
    }
    print!("{md}");
    std::fs::write(b.a.out.join("capture.md"), &md)?;
    let doc = json!({ "rows": rows, "samples": samples.iter().map(|(r, t, m)| json!({
        "round": r, "target": t.name(), "metrics": m,
    })).collect::<Vec<_>>(), "machine": machine });
    std::fs::write(
        b.a.out.join("capture.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    eprintln!("wrote {}", b.a.out.join("capture.json").display());
    Ok(())
}
