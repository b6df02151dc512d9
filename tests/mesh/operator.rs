//! An operator's ordinary mistakes must not cost config or reach the wrong
//! mesh: a second `trellis up` on a held block is refused and the running
//! mesh keeps what was applied; Ctrl-C and `up` again keep applied config
//! (`--fresh` drops it); with two meshes the CLI asks which one is meant;
//! the control-plane API refuses unauthenticated, cross-origin and
//! form-typed requests; no private key leaves through the API or the CLI.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use e2e::{
    Launch, Mesh, bin, cli_env, echo_workload, eventually, http, pids_with_arg, reserve_block,
};

/// A one-workload mesh directory: `web` (echo) with a DestinationRule, and
/// a Secret holding a real private key.
fn small_mesh(key_pem: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("web.yaml"), echo_workload("web", ""))?;
    std::fs::write(
        dir.path().join("dr.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: web\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
    )?;
    let indented: String = key_pem.lines().map(|l| format!("    {l}\n")).collect();
    std::fs::write(
        dir.path().join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: web-key}}\ntype: Opaque\nstringData:\n  tls.key: |\n{indented}data:\n  greeting: aGVsbG8=\n"
        ),
    )?;
    Ok(dir)
}

fn key_pem() -> Result<String> {
    Ok(rcgen::KeyPair::generate()?.serialize_pem())
}

const APPLIED_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web-applied}\nspec:\n  hosts: [web]\n  http:\n  - route: [{destination: {host: web}}]\n";
const APPLIED_DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: web\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n";

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

fn ok(out: &Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `trellis` with `args` and the CLI home `home`; a command that is
/// still running after `within` is killed and reported (the old `up` never ended).
fn trellis_within(home: &Path, args: &[&str], within: Duration) -> Result<Output> {
    let mut child = Command::new(bin("trellis"))
        .args(args)
        .envs(cli_env(home))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let out = child.wait_with_output()?;
            bail!(
                "`trellis {}` still running after {within:?}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_vs(mesh: &Mesh, name: &str) -> Result<bool> {
    let out = ok(&mesh.trellis(&["get", "virtualservices", "-o", "json"]))?;
    Ok(out.contains(&format!("\"{name}\"")))
}

fn lb_policy(mesh: &Mesh) -> Result<String> {
    let out = ok(&mesh.trellis(&["get", "destinationrules", "web", "-o", "json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.pointer("/items/0/spec/trafficPolicy/loadBalancer/simple")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_is_refused_and_applied_config_survives_a_control_plane_restart() -> Result<()>
{
    let dir = small_mesh(&key_pem()?)?;
    let mesh = Mesh::up(dir.path())?;
    let files = tempfile::tempdir()?;
    ok(&mesh.trellis(&["apply", "-f", &write(files.path(), "vs.yaml", APPLIED_VS)?]))?;

    // The same block, another state directory: refused at once, naming the holder.
    let other_state = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    let block = mesh.block.to_string();
    let out = trellis_within(
        &mesh.home,
        &[
            "up",
            &d,
            "--block",
            &block,
            "--state-dir",
            &other_state.path().display().to_string(),
        ],
        Duration::from_secs(20),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.{block}.0.0/16")), "{stderr}");
    assert!(
        stderr.contains("--block"),
        "says how to pick another block: {stderr}"
    );
    assert!(
        stderr.contains(&mesh.state.path().display().to_string()),
        "names the running mesh's state dir: {stderr}"
    );
    assert!(stderr.contains("pid "), "names its pid: {stderr}");
    assert!(
        std::fs::read_dir(other_state.path())?.next().is_none(),
        "nothing was written for the refused mesh"
    );

    // Another block, the running mesh's state directory: refused too.
    let (free, _lock) = reserve_block()?;
    let out = trellis_within(
        &mesh.home,
        &[
            "up",
            &d,
            "--block",
            &free.to_string(),
            "--state-dir",
            &mesh.state.path().display().to_string(),
        ],
        Duration::from_secs(20),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("state directory"), "{stderr}");

    // The first mesh's control plane restarts from its store: the applied change is there.
    let config = mesh.state.path().join("config").display().to_string();
    let old: Vec<i32> = pids_with_arg(&config);
    assert_eq!(old.len(), 1, "one trellisd serves {config}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    eventually(Duration::from_secs(30), || async {
        let now = pids_with_arg(&config);
        ensure!(!now.is_empty() && now != old, "trellisd not restarted yet");
        ensure!(
            has_vs(&mesh, "web-applied")?,
            "control plane not answering yet"
        );
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_again_after_ctrl_c_keeps_applied_config_and_fresh_drops_it() -> Result<()> {
    let dir = small_mesh(&key_pem()?)?;
    let (block, _lock) = reserve_block()?;
    let state = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let launch = |args: &[&str]| {
        Mesh::launch(
            dir.path(),
            Launch {
                block: Some(block),
                state: Some(state.path().to_path_buf()),
                home: Some(home.path().to_path_buf()),
                args: args.iter().map(|a| a.to_string()).collect(),
                ..Launch::default()
            },
        )
    };
    let files = tempfile::tempdir()?;
    let mesh = launch(&[])?;
    ok(&mesh.trellis(&["apply", "-f", &write(files.path(), "vs.yaml", APPLIED_VS)?]))?;
    ok(&mesh.trellis(&["apply", "-f", &write(files.path(), "dr.yaml", APPLIED_DR)?]))?;
    assert_eq!(lb_policy(&mesh)?, "LEAST_REQUEST");
    let status = mesh.stop()?;
    assert!(status.success(), "Ctrl-C stops the mesh cleanly: {status}");
    let records = home.path().join("state/trellis/meshes");
    assert!(
        std::fs::read_dir(&records).map_or(true, |mut d| d.next().is_none()),
        "a stopped mesh leaves no record in {}",
        records.display()
    );

    let mesh = launch(&[])?;
    assert!(
        has_vs(&mesh, "web-applied")?,
        "the applied VirtualService is kept"
    );
    assert_eq!(
        lb_policy(&mesh)?,
        "LEAST_REQUEST",
        "an applied change wins over DIR's version"
    );
    mesh.stop()?;

    let mesh = launch(&["--fresh"])?;
    assert!(!has_vs(&mesh, "web-applied")?, "--fresh starts from DIR");
    assert_eq!(lb_policy(&mesh)?, "ROUND_ROBIN");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_meshes_the_cli_asks_which_and_follows_flag_env_and_context() -> Result<()> {
    let key = key_pem()?;
    let home = tempfile::tempdir()?;
    let (d1, d2) = (small_mesh(&key)?, small_mesh(&key)?);
    let launch = |dir: &Path| {
        Mesh::launch(
            dir,
            Launch {
                home: Some(home.path().to_path_buf()),
                ..Launch::default()
            },
        )
    };
    let (one, two) = (launch(d1.path())?, launch(d2.path())?);
    let cli = |args: &[&str], env: &[(&str, &str)]| -> Output {
        Command::new(bin("trellis"))
            .args(args)
            .envs(cli_env(home.path()))
            .env_remove("TRELLIS_CONTROL_PLANE")
            .env_remove("TRELLIS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .expect("run trellis")
    };
    let pod_ip_block = |out: &Output| -> Result<u8> {
        let v: serde_json::Value = serde_json::from_str(&ok(out)?)?;
        let ip = v
            .pointer("/items/0/status/podIP")
            .and_then(|s| s.as_str())
            .unwrap_or_default();
        Ok(ip
            .split('.')
            .nth(1)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0))
    };

    // None chosen: an error listing both, never a guess.
    let out = cli(&["get", "pods", "-o", "json"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for m in [&one, &two] {
        assert!(stderr.contains(&format!("block-{}", m.block)), "{stderr}");
        assert!(stderr.contains(&m.api), "{stderr}");
    }

    // The flag, and the environment, choose; the CLI says which it uses; the token comes from the record.
    let out = cli(
        &["get", "pods", "-o", "json", "--control-plane", &two.api],
        &[],
    );
    assert_eq!(pod_ip_block(&out)?, two.block);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("using the mesh at {}", two.api))
    );
    let out = cli(
        &["get", "pods", "-o", "json"],
        &[("TRELLIS_CONTROL_PLANE", &one.api)],
    );
    assert_eq!(pod_ip_block(&out)?, one.block);

    // A context.
    ok(&cli(
        &["context", "use", &format!("block-{}", two.block)],
        &[],
    ))?;
    let listing = ok(&cli(&["context"], &[]))?;
    assert!(
        listing.contains(&format!("block-{}", one.block)),
        "{listing}"
    );
    let out = cli(&["get", "pods", "-o", "json"], &[]);
    assert_eq!(pod_ip_block(&out)?, two.block);

    // Without the mesh's record (another user's home), the API refuses: no token.
    let stranger = tempfile::tempdir()?;
    let out = Command::new(bin("trellis"))
        .args(["get", "pods", "--control-plane", &one.api])
        .envs(cli_env(stranger.path()))
        .env_remove("TRELLIS_TOKEN")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_strangers_and_no_private_key_leaves_it() -> Result<()> {
    let key = key_pem()?;
    let dir = small_mesh(&key)?;
    let mesh = Mesh::up(dir.path())?;
    let token = mesh.token()?;
    let client = http();
    let disable = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: DISABLE}}\n";
    let apply = || client.post(format!("{}/v1/apply", mesh.api)).body(disable);

    let status = |r: reqwest::RequestBuilder| async move {
        Ok::<_, anyhow::Error>(r.send().await?.status().as_u16())
    };
    assert_eq!(
        status(apply().header("content-type", "application/yaml")).await?,
        401,
        "no token"
    );
    assert_eq!(
        status(
            apply()
                .header("content-type", "application/yaml")
                .bearer_auth("guess")
        )
        .await?,
        401,
        "a wrong token"
    );
    assert_eq!(
        status(
            apply()
                .header("content-type", "application/yaml")
                .bearer_auth(&token)
                .header("origin", "http://evil.example")
        )
        .await?,
        403,
        "cross-origin"
    );
    assert_eq!(
        status(
            apply()
                .header("content-type", "application/yaml")
                .bearer_auth(&token)
                .header("host", "evil.example:15014")
        )
        .await?,
        403,
        "a foreign Host (DNS rebinding)"
    );
    assert_eq!(
        status(
            apply()
                .header("content-type", "text/plain")
                .bearer_auth(&token)
        )
        .await?,
        415,
        "a form-like content type"
    );
    assert_eq!(
        status(apply().bearer_auth(&token)).await?,
        415,
        "no content type"
    );
    assert_eq!(
        status(client.get(format!("{}/v1/resources", mesh.api))).await?,
        401,
        "reading needs the token too"
    );
    assert_eq!(
        status(client.get(format!("{}/healthz", mesh.api))).await?,
        200
    );
    let pa = ok(&mesh.trellis(&["get", "peerauthentications", "-A", "-o", "json"]))?;
    assert!(!pa.contains("DISABLE"), "nothing refused was stored: {pa}");

    // No private key in any API or CLI output, keys and sizes shown.
    let body = key.lines().nth(1).unwrap_or_default().to_string();
    let leaks = |text: &str, what: &str| {
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains(&body),
            "{what} shows the key: {text}"
        );
    };
    let all = client
        .get(format!("{}/v1/resources", mesh.api))
        .bearer_auth(&token)
        .send()
        .await?
        .text()
        .await?;
    leaks(&all, "GET /v1/resources");
    assert!(
        all.contains("\"tls.key\"") && all.contains("[redacted]"),
        "{all}"
    );
    let secrets = client
        .get(format!("{}/v1/resources?kind=Secret", mesh.api))
        .bearer_auth(&token)
        .send()
        .await?
        .text()
        .await?;
    leaks(&secrets, "GET /v1/resources?kind=Secret");
    assert!(
        secrets.contains("[redacted] (5 bytes)"),
        "the size of data values: {secrets}"
    );
    for args in [
        &["get", "secrets", "-o", "json"][..],
        &["get", "secrets", "-o", "yaml"],
        &["get", "secrets", "-A", "-o", "json"],
        &["get", "secret", "web-key", "-o", "yaml"],
        &["get", "secrets"],
        &["proxy-status", "-o", "json"],
    ] {
        let out = mesh.trellis(args);
        leaks(&ok(&out)?, &args.join(" "));
        leaks(&String::from_utf8_lossy(&out.stderr), &args.join(" "));
    }
    let pods = mesh.pods()?;
    let pod = pods
        .iter()
        .find_map(|p| {
            p.pointer("/metadata/name")?
                .as_str()
                .filter(|n| n.starts_with("web-"))
        })
        .unwrap_or_default()
        .to_string();
    for t in [
        "all", "secret", "listener", "route", "cluster", "endpoint", "clusters",
    ] {
        let out = mesh.trellis(&["proxy-config", t, &pod, "-o", "json"]);
        leaks(&ok(&out)?, &format!("proxy-config {t}"));
    }
    let logs = std::fs::read_to_string(mesh.logs().join("trellisd.log"))?;
    leaks(&logs, "trellisd's log");
    assert!(
        logs.contains("config changed through the API") || logs.contains("refused"),
        "mutating calls are logged"
    );

    // Explicitly asked, with the token: the value is shown.
    let shown = ok(&mesh.trellis(&[
        "get",
        "secret",
        "web-key",
        "-o",
        "json",
        "--show-secret-data",
    ]))?;
    assert!(shown.contains("PRIVATE KEY"), "{shown}");

    // Accepted but not enforced: said loudly.
    let files = tempfile::tempdir()?;
    let ra = write(
        files.path(),
        "telemetry.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  metrics: [{providers: [{name: stackdriver}]}]\n",
    )?;
    let out = mesh.trellis(&["apply", "-f", &ra]);
    ok(&out)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Telemetry metrics providers other than prometheus not enforced yet"),
        "{stderr}"
    );
    // And to any other client, in a `Warning` header as Kubernetes' API server says it.
    let resp = client
        .post(format!("{}/v1/apply", mesh.api))
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(std::fs::read_to_string(&ra)?)
        .send()
        .await?;
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.starts_with("299 - ") && warning.contains("not enforced yet"),
        "{warning:?}"
    );

    // A closed stdout (`trellis get pods | head -1`) ends the command quietly.
    let (read, write_end) = nix::unistd::pipe()?;
    drop(read);
    let out = Command::new(bin("trellis"))
        .args(["get", "pods", "-A", "--control-plane", &mesh.api])
        .envs(cli_env(&mesh.home))
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{}: {stderr}",
        out.status
    );
    Ok(())
}
