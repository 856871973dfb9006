//! The dashboard in a real browser: headless Chromium (Debian's chromium and
//! chromedriver, installed by tests/run.sh) driven by Selenium from
//! tests/python/dashboard_test.py. The pipeline quarantines an agent that
//! waits for approval; the browser sees it with its diagnosis and clicks
//! Approve; the healing action is held at the agent's control API until the
//! browser has shown HEALING, then healthy turns take the agent through
//! probation while the browser waits for HEALTHY. The screenshot is saved as
//! tests/artifacts/dashboard.png.

mod api_support;
mod common;

use api_support::{Harness, KEY, Options};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_from_the_dashboard_in_chromium() {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} is missing: run tests/run.sh (it installs Debian's chromium and chromium-driver)"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    let h = Harness::start(Options {
        control: Some(true),
        ..Options::default()
    })
    .await;
    let agent = "billing-agent";
    h.healthy_turns("support-agent", 20).await;
    h.drive_to_approval(agent).await;

    let mut browser = tokio::process::Command::new(common::python())
        .arg(common::python_script("dashboard_test.py"))
        .args(["--url", &h.base, "--key", KEY, "--agent", agent])
        .arg("--screenshot")
        .arg(&screenshot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser test");
    // Everything the script says on stderr, for the failure message.
    let said = Arc::new(Mutex::new(String::new()));
    let stderr = browser.stderr.take().unwrap();
    let stderr_task = tokio::spawn({
        let said = said.clone();
        async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut said = said.lock().unwrap();
                said.push_str(&line);
                said.push('\n');
            }
        }
    });
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut next_line = async |what: &str| -> String {
        match tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "the browser test stopped before {what} ({other:?}):\n{}",
                said.lock().unwrap()
            ),
        }
    };

    let saw = next_line("the approval card").await;
    assert!(saw.starts_with("SAW APPROVAL "), "{saw}");
    let saw = next_line("HEALING").await;
    assert_eq!(saw, "SAW HEALING");
    // The browser has shown HEALING: let the action finish, and feed
    // healthy turns until probation is over.
    h.control.as_ref().unwrap().release_healing();
    h.wait_state(agent, "PROBATION").await;
    h.heal_through_probation(agent).await;
    let done = next_line("HEALTHY").await;
    assert_eq!(done, "DONE");
    let status = browser.wait().await.unwrap();
    stderr_task.await.unwrap();
    assert!(
        status.success(),
        "browser test failed:\n{}",
        said.lock().unwrap()
    );

    let png = std::fs::read(&screenshot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG image");
    assert!(png.len() > 10_000, "a real page, {} bytes", png.len());
    h.stop().await;
}
