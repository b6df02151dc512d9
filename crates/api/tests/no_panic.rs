//! Robustness: `parse` and `validate` return errors, never panic, on
//! truncated, corrupted and hostile input. A bounded, deterministic
//! mutation loop over the seed files and a few hand-written documents
//! (no external fuzzing crate: this runs in every `cargo test`).

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

/// xorshift64*: deterministic so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

const CORPUS_EXTRA: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - match: [{uri: {regex: '^/a.*'}, headers: {x: {}}}]\n    route: [{destination: {host: a, port: {number: 80}}, weight: 100}]\n    retries: {attempts: 3, perTryTimeout: 1s}\n    fault: {abort: {httpStatus: 503, percentage: {value: 1}}}\n",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n  portLevelMtls: {8080: {mode: DISABLE}}\n",
    "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s\"}, \"spec\": {\"ports\": [{\"port\": 80}]}}]}",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  trafficPolicy:\n    loadBalancer: {consistentHash: {maglev: {tableSize: 65537}, httpCookie: {name: c, ttl: 10s}}}\n    connectionPool: {tcp: {connectTimeout: 1.5s}}\n",
];

/// Characters that change YAML structure when inserted.
const SPICE: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    "- ",
    "\n",
    "\n  ",
    "'",
    "\"",
    "*",
    "&a ",
    "*a",
    "!!binary ",
    "!x ",
    "|",
    ">",
    "#",
    "---\n",
    "<<: ",
    "~",
    "null",
    "-1",
    "99999999999999999999",
    "1e400",
    ".nan",
    "\t",
    "\u{0}",
    "é",
    "%",
    "@",
];

fn corpus() -> Vec<String> {
    let mut out: Vec<String> = CORPUS_EXTRA.iter().map(|s| s.to_string()).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds/yaml");
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            paths.sort();
            out.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
        }
        Err(_) => eprintln!(
            "seed directory {} not found; fuzzing the built-in corpus only",
            dir.display()
        ),
    }
    out
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(7) {
            // truncate
            0 => {
                let at = rng.below(bytes.len() + 1);
                bytes.truncate(at);
            }
            // flip a byte
            1 if !bytes.is_empty() => {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            // insert structure
            2 => {
                let at = rng.below(bytes.len() + 1);
                let spice = SPICE[rng.below(SPICE.len())].as_bytes();
                bytes.splice(at..at, spice.iter().copied());
            }
            // delete a range
            3 if !bytes.is_empty() => {
                let a = rng.below(bytes.len());
                let b = (a + rng.below(16)).min(bytes.len());
                bytes.drain(a..b);
            }
            // duplicate a line
            4 => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    lines.insert(i, lines[i]);
                }
                bytes = lines.join("\n").into_bytes();
            }
            // re-indent a line
            5 => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    if rng.below(2) == 0 {
                        lines[i].insert_str(0, "  ");
                    } else {
                        lines[i] = lines[i].trim_start().to_string();
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
            // swap a scalar for a number/string/list
            _ => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                if let Some(pos) = s.match_indices(": ").map(|(i, _)| i).nth(rng.below(8)) {
                    let end = s[pos + 2..].find('\n').map_or(s.len(), |e| pos + 2 + e);
                    let replacement =
                        ["-7", "\"x\"", "[]", "{}", "~", "3.5", "true", "0", "'*'"][rng.below(9)];
                    bytes = format!("{}: {}{}", &s[..pos], replacement, &s[end..]).into_bytes();
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn exercise(text: &str) -> bool {
    match api::parse("fuzz.yaml", text) {
        Ok(resources) => {
            for r in &resources {
                let _ = api::validate(r);
                let _ = r.to_yaml();
                let _ = r.to_json();
                let _ = (r.kind(), r.name(), r.namespace(), r.labels());
            }
            true
        }
        Err(e) => {
            // The error must render, and carry the file name.
            assert!(e.to_string().starts_with("fuzz.yaml: document "), "{e}");
            false
        }
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let corpus = corpus();
    // More iterations on demand: API_FUZZ_ITERS=20000 cargo test -p api --test no_panic
    let iters: usize = std::env::var("API_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("API_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_1234_ABCD_0001);
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0, 0);
    for text in &corpus {
        for _ in 0..iters {
            let input = mutate(&mut rng, text);
            let result = std::panic::catch_unwind(|| exercise(&input));
            match result {
                Ok(true) => ok += 1,
                Ok(false) => err += 1,
                Err(_) => panic!("panic on input:\n{input:?}"),
            }
        }
    }
    // The loop must explore both outcomes to mean anything.
    assert!(ok > 0 && err > 0, "ok={ok} err={err}");
}

#[test]
fn hostile_inputs_are_rejected_quickly() {
    let deep_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_yaml = format!("{}a", "- ".repeat(10_000));
    let deep_flow = format!("a: {}{}", "{b: ".repeat(5_000), "}".repeat(5_000));
    // Exponential alias expansion ("billion laughs").
    let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = char::from(b'a' + i - 1);
        let cur = char::from(b'a' + i);
        laughs.push_str(&format!("{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let huge_int = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: 99999999999999999999999}]}]}\n";
    let binary = "\u{0}\u{1}\u{2}\u{ff}apiVersion";
    let inputs = [
        deep_json,
        deep_yaml,
        deep_flow,
        laughs,
        huge_int.to_string(),
        binary.to_string(),
        "\u{feff}".to_string(),
        "[]".into(),
        "{}".into(),
        "null".into(),
        "- null".into(),
    ];
    // No time is asserted (the machines are shared and noisy); a hang is
    // caught by the test runner's timeout (.config/nextest.toml).
    for input in &inputs {
        let result = std::panic::catch_unwind(|| exercise(input));
        assert!(
            result.is_ok(),
            "panic on {:?}",
            &input[..input.len().min(80)]
        );
    }
}
