//! Long-running commands: `serve` prints a token only with development secrets, and the
//! standalone sandbox serves redirect URIs of the configured Tributary.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use crate::{command, contains_jwt, production_env};

/// Starts a long-running command, collects its stderr until a line contains `until` (or the
/// process ends), then kills it. Returns what it printed on stderr.
fn run_until(dir: &Path, args: &[&str], env: &[(&str, &str)], until: &str) -> String {
    let mut child = command(dir, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (lines, received) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    // Only a guard against a hung child: the line normally comes within seconds.
    while let Ok(line) = received.recv_timeout(Duration::from_secs(120)) {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains(until) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

#[test]
fn serve_prints_a_token_only_with_development_secrets() {
    let listening = "Tributary is listening on";
    for extra in [&[][..], &["--no-sandbox"]] {
        let dir = tempfile::tempdir().unwrap();
        let args = [&["serve", "--listen", "127.0.0.1:0"][..], extra].concat();
        let printed = run_until(dir.path(), &args, &production_env(), "Bearer");
        assert!(printed.contains(listening), "{args:?}: {printed}");
        assert!(
            !contains_jwt(&printed),
            "{args:?}: a token was printed: {printed}"
        );
        assert!(!printed.contains("/sandbox/"), "{args:?}: {printed}");
        assert!(!printed.contains("sandbox-cgm"), "{args:?}: {printed}");
    }

    // Development mode: the banner's token is there (and it is what the first check looks for).
    let dir = tempfile::tempdir().unwrap();
    let printed = run_until(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[],
        "export TOKEN=",
    );
    assert!(contains_jwt(&printed), "{printed}");
    assert!(
        printed.contains("partners sandbox-cgm, sandbox-pump"),
        "{printed}"
    );
}

#[tokio::test]
async fn standalone_sandbox_serves_the_configured_tributary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9555\"\n").unwrap();
    let mut child = command(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "sandbox",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads stderr to the end (a closed pipe would kill the sandbox at its next log line).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    // Only a guard against a hung child: the line normally comes within a second.
    let url = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .expect("the sandbox starts")
        .unwrap();
    let index = async { reqwest::get(&url).await?.json::<serde_json::Value>().await }.await;
    let _ = child.kill();
    let _ = child.wait();
    let index = index.unwrap();
    let uris = index["clients"][0]["redirect_uris"].to_string();
    assert!(
        uris.contains("http://127.0.0.1:9555/v1/oauth/sandbox-cgm/callback"),
        "{index}"
    );
    assert!(!uris.contains(":8080"), "{index}");
    assert!(
        !dir.path().join("tributary.secrets.toml").exists(),
        "the sandbox needs no secrets"
    );
}
