//! `trellis analyze` as a user runs it: the real binary, files on disk,
//! istioctl's exit codes (0 clean, 79 issues, 1 unreadable input) and its
//! log, JSON and YAML output shapes.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"#;

fn route_to(subset: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]
"#
    )
}

/// A fresh directory holding `files` (name, content).
fn fixture(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli-analyze")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write fixture");
    }
    dir
}

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run trellis")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn clean_input_exits_zero_with_istioctls_summary() {
    let dir = fixture(
        "clean",
        &[
            ("mesh.yaml", "trustDomain: example.org\n"),
            ("app.yaml", SERVICE),
            ("vs.yaml", &route_to("v1")),
        ],
    );
    let out = trellis(&["analyze", &dir.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr)
            .contains("\u{2714} No validation issues found when analyzing namespace: default."),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn issues_exit_79_with_log_lines() {
    let dir = fixture(
        "issues",
        &[("app.yaml", SERVICE), ("vs.yaml", &route_to("v4"))],
    );
    let vs = dir.join("vs.yaml").display().to_string();
    let out = trellis(&[
        "analyze",
        "-f",
        &dir.join("app.yaml").display().to_string(),
        "-f",
        &vs,
    ]);
    assert_eq!(out.status.code(), Some(79), "stderr: {}", text(&out.stderr));
    let expected = format!(
        r#"Error [IST0101] (VirtualService reviews.default {vs}) Referenced host+subset in destinationrule not found: "reviews+v4""#
    );
    assert!(
        text(&out.stdout).lines().any(|l| l == expected),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr)
            .contains("Error: Analyzers found issues when analyzing namespace: default.")
    );

    // An unknown level is a usage error (clap's exit code), not a finding.
    let out = trellis(&[
        "analyze",
        &dir.display().to_string(),
        "--failure-threshold",
        "none-such",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn thresholds_filter_output_and_failure() {
    // A port name without a protocol prefix is Info (IST0118).
    let service = SERVICE.replace("name: http, port", "name: web, port");
    let dir = fixture("thresholds", &[("app.yaml", &service)]);
    let path = dir.display().to_string();

    let out = trellis(&["analyze", &path]);
    assert_eq!(out.status.code(), Some(0), "Info does not fail by default");
    assert!(
        text(&out.stdout).starts_with("Info [IST0118] (Service reviews.default "),
        "{}",
        text(&out.stdout)
    );

    let out = trellis(&["analyze", &path, "--failure-threshold", "Info"]);
    assert_eq!(out.status.code(), Some(79));

    let out = trellis(&["analyze", &path, "--output-threshold", "warning"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
}

#[test]
fn json_and_yaml_are_shaped_like_istioctls() {
    let dir = fixture(
        "json",
        &[("app.yaml", SERVICE), ("vs.yaml", &route_to("v4"))],
    );
    let path = dir.display().to_string();

    // As istioctl: the exit code follows the threshold in log output only.
    let out = trellis(&["analyze", &path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let items = json.as_array().expect("a list of messages");
    assert_eq!(items.len(), 1, "{json:#}");
    let m = &items[0];
    let mut keys: Vec<&str> = m
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "code",
            "documentationUrl",
            "level",
            "message",
            "origin",
            "reference"
        ]
    );
    assert_eq!(m["code"], "IST0101");
    assert_eq!(m["level"], "Error");
    assert_eq!(m["origin"], "VirtualService reviews.default");
    assert_eq!(
        m["message"],
        r#"Referenced host+subset in destinationrule not found: "reviews+v4""#
    );
    assert_eq!(m["reference"], dir.join("vs.yaml").display().to_string());
    assert_eq!(
        m["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    );

    let out = trellis(&["analyze", &path, "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let yaml: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).expect("stdout is YAML");
    assert_eq!(yaml, json);

    // Nothing to report is an empty list, and exit 0.
    let clean = fixture("json-clean", &[("app.yaml", SERVICE)]);
    let out = trellis(&["analyze", &clean.display().to_string(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok(),
        Some(serde_json::json!([]))
    );
}

#[test]
fn a_broken_resource_is_a_message_and_the_rest_is_analyzed() {
    // A misspelt field in one VirtualService, a route to a missing subset in
    // another, and a Pod without an image (no error for analyze: istioctl
    // reads Kubernetes objects as the API server stores them).
    let broken = route_to("v1").replace("subset: v1", "subet: v1");
    let other = route_to("v4").replace("name: reviews", "name: reviews-v4");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: x}}\nspec:\n  containers: [{name: c}]\n";
    let dir = fixture(
        "invalid",
        &[
            ("app.yaml", SERVICE),
            ("vs.yaml", &broken),
            ("vs2.yaml", &other),
            ("pod.yaml", pod),
        ],
    );
    let out = trellis(&["analyze", &dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let vs = dir.join("vs.yaml").display().to_string();
    assert!(
        stdout.lines().any(|l| l.starts_with(&format!(
            "Error [IST0106] (VirtualService reviews.default {vs}) Schema validation error: "
        )) && l.contains("did you mean `subset`?")),
        "{stdout}"
    );
    assert!(
        stdout.contains("(VirtualService reviews-v4.default ") && stdout.contains("IST0101"),
        "{stdout}"
    );
    assert!(!stdout.contains("IST0106] (Pod"), "{stdout}");

    // Suppressed on the command line, with a wildcard.
    let out = trellis(&[
        "analyze",
        &dir.display().to_string(),
        "--suppress",
        "IST0106=VirtualService *.default",
        "-S",
        "IST0101=VirtualService reviews-v4.default",
        "-S",
        "IST0103=Pod *",
        "-S",
        "IST0173=*",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // A document that is not an object at all: reported, the rest analyzed,
    // and exit 65 when nothing worse was found.
    let dir = fixture(
        "unparsable",
        &[("app.yaml", SERVICE), ("junk.yaml", "just a string\n")],
    );
    let out = trellis(&["analyze", &dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(but 1 file could not be parsed)"),
        "{}",
        text(&out.stderr)
    );
    let out = trellis(&["analyze", &dir.display().to_string(), "--ignore-unknown"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_suppress_annotation_silences_codes_on_its_resource() {
    let annotated = route_to("v4").replace(
        "{name: reviews}",
        "{name: reviews, annotations: {galley.istio.io/analyze-suppress: \"IST0102,IST0101\"}}",
    );
    let dir = fixture(
        "annotation",
        &[("app.yaml", SERVICE), ("vs.yaml", &annotated)],
    );
    let out = trellis(&["analyze", &dir.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn validate_reads_subfolders_and_says_how_much_it_read() {
    let dir = fixture("validate-recursive", &[("app.yaml", SERVICE)]);
    std::fs::create_dir_all(dir.join("networking/v1")).expect("subfolders");
    std::fs::write(dir.join("networking/v1/vs.yaml"), route_to("v1")).expect("write");
    let out = trellis(&["validate", "-f", &dir.display().to_string()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("read 2 file(s) with 3 resource(s)"),
        "{stdout}"
    );

    // A mistake two folders down is found, and named by its file.
    std::fs::write(
        dir.join("networking/v1/bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: lots\n",
    )
    .expect("write");
    let out = trellis(&["validate", "-f", &dir.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("networking/v1/bad.yaml"),
        "{}",
        text(&out.stderr)
    );
}

/// `trellis validate -f DIR | head -1`: the reader went away; no panic, no noise.
#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = fixture("closed-stdout", &[("app.yaml", SERVICE)]);
    for args in [
        vec!["validate", "-f", dir.to_str().expect("utf-8 path")],
        vec!["analyze", dir.to_str().expect("utf-8 path"), "-o", "yaml"],
    ] {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .expect("run trellis");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.code() != Some(101), "{args:?}: {stderr}");
    }
}

#[test]
fn accepted_but_unenforced_resources_are_reported() {
    let dir = fixture(
        "not-enforced",
        &[
            ("app.yaml", SERVICE),
            (
                "jwt.yaml",
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  jwtRules: [{issuer: \"https://issuer.example\"}]\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: logs}\nspec:\n  accessLogging: [{disabled: true}]\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: metrics}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  metrics: [{providers: [{name: stackdriver}]}]\n",
            ),
        ],
    );
    let out = trellis(&["analyze", &dir.display().to_string()]);
    let stdout = text(&out.stdout);
    // RequestAuthentication is enforced: no finding.
    assert!(
        !stdout.contains("RequestAuthentication jwt.default"),
        "{stdout}"
    );
    // Access logging is enforced: no finding; a reporting interval is not.
    assert!(!stdout.contains("Telemetry logs.default"), "{stdout}");
    assert!(
        stdout.contains("Telemetry metrics providers other than prometheus not enforced yet"),
        "{stdout}"
    );
    let out = trellis(&["validate", "-f", &dir.display().to_string()]);
    assert!(
        text(&out.stdout).contains("not enforced yet"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn proxy_config_help_names_the_types() {
    let out = trellis(&["proxy-config", "--help"]);
    let help = text(&out.stdout);
    for t in ["cluster", "endpoint", "listener", "route", "secret", "all"] {
        assert!(help.contains(t), "{t} in {help}");
    }
}
