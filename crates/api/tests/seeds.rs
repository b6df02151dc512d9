//! Every YAML file users wrote (`shared/seeds/yaml`) parses, validates and
//! round-trips.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds/yaml")
}

fn seeds() -> Option<Vec<(String, String)>> {
    let dir = seed_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: seed directory {} not found", dir.display());
        return None;
    };
    let mut files: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect();
    files.sort();
    Some(files)
}

#[test]
fn every_seed_parses_and_validates() {
    let Some(files) = seeds() else { return };
    assert!(!files.is_empty(), "no seed files found");
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, text) in &files {
        match api::parse(name, text) {
            Err(e) => failures.push(e.to_string()),
            Ok(resources) => {
                assert!(!resources.is_empty(), "{name}: no resources");
                for r in &resources {
                    count += 1;
                    for e in api::validate(r) {
                        failures.push(format!("{name}: {}: {e}", r.display_name()));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seed failures:\n{}",
        failures.join("\n")
    );
    assert!(count >= files.len());
}

#[test]
fn seed_kinds_are_recognised() {
    let Some(files) = seeds() else { return };
    for (name, text) in &files {
        let resources = api::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
        // File names are `NNN-NN-<Kind>-<name>.yaml`: the first document's
        // kind is in the name.
        let kind_in_name = name.split('-').nth(2).unwrap_or_default();
        assert_eq!(resources[0].kind_name(), kind_in_name, "{name}");
        let expect_unsupported =
            ["IstioOperator", "EnvoyFilter", "ServiceMonitor"].contains(&kind_in_name);
        assert_eq!(
            resources[0].kind() == api::Kind::Unsupported,
            expect_unsupported,
            "{name}"
        );
        if let api::Resource::Unsupported { reason, .. } = &resources[0] {
            assert!(!reason.is_empty());
        }
    }
}

#[test]
fn seeds_round_trip_through_yaml_and_json() {
    let Some(files) = seeds() else { return };
    for (name, text) in &files {
        for r in api::parse(name, text).unwrap_or_else(|e| panic!("{e}")) {
            if r.kind() == api::Kind::Unsupported {
                continue; // only the envelope is kept
            }
            let yaml = r.to_yaml();
            let back = api::parse("round-trip.yaml", &yaml)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            assert_eq!(back, vec![r.clone()], "{name}: YAML round trip\n{yaml}");
            let json = r.to_json().to_string();
            let back = api::parse("round-trip.json", &json)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{json}"));
            assert_eq!(back, vec![r.clone()], "{name}: JSON round trip");
        }
    }
}
