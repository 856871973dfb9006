//! `agent-immune demo` as a newcomer runs it: the real binary on a fresh
//! state directory. Within its schedule the dashboard is served, every
//! agent's baseline is learned, the prompt drift is detected, quarantined,
//! healed and passes probation on its own, the runaway loop waits for an
//! approval that is given with the generated API key from the CLI, and the
//! slow drift never alarms.

use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_agent-immune");

/// Lines a child printed so far, on one stream.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    fn find<T>(&self, pick: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.0.lock().unwrap().iter().find_map(|l| pick(l))
    }
}

struct Demo {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    http: reqwest::Client,
}

impl Demo {
    /// Polls `check` every 200 ms until it gives a value or `within` ends;
    /// a failure names `what` and shows what the demo printed.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl AsyncFnMut(&Demo) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(found) = check(self).await {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the demo exited ({status}) before {what}:\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.text(),
            self.stderr.text()
        )
    }

    async fn get(&self, url: &str) -> Option<Value> {
        let response = self.http.get(url).send().await.ok()?;
        serde_json::from_slice(&response.bytes().await.ok()?).ok()
    }
}

/// The agent an injection of `kind` targets, from the printed schedule
/// (`    35s  infinite_loop on coder-02`).
fn scheduled(stdout: &Lines, kind: &str) -> Option<String> {
    let marker = format!(" {kind} on ");
    stdout.find(|l| {
        l.split_once(&marker)
            .map(|(_, agent)| agent.trim().to_string())
    })
}

fn events_named<'a>(events: &'a Value, name: &str) -> Vec<&'a Value> {
    events
        .as_array()
        .map(|list| list.iter().filter(|e| e["name"] == name).collect())
        .unwrap_or_default()
}

fn passed_probation(events: &Value) -> bool {
    events_named(events, "agent_immune.lifecycle")
        .iter()
        .any(|e| {
            e["body"]
                .as_str()
                .unwrap_or("")
                .contains("PROBATION -> HEALTHY")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_out_end_to_end_on_a_fresh_machine() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--api",
            "127.0.0.1:0",
            "--duration",
            "4m",
            "--data-dir",
        ])
        .arg(data.path().join("state"))
        .env_remove("AGENT_IMMUNE_API_KEY")
        .env_remove("AGENT_IMMUNE_DATA_DIR")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start agent-immune demo");
    let stdout = Lines::follow(child.stdout.take().unwrap());
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let mut demo = Demo {
        child,
        stdout,
        stderr,
        http: reqwest::Client::new(),
    };

    // What a newcomer reads first: the dashboard's URL, the generated key
    // and the schedule.
    let dashboard = demo
        .wait_for("dashboard URL", Duration::from_secs(60), async |d| {
            d.stdout.find(|l| {
                l.trim()
                    .strip_prefix("dashboard")
                    .map(|url| url.trim().trim_end_matches('/').to_string())
            })
        })
        .await;
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{dashboard}");
    let key = demo
        .wait_for("generated API key", Duration::from_secs(10), async |d| {
            d.stderr.find(|l| {
                let l = l.trim();
                l.starts_with("aik_").then(|| l.to_string())
            })
        })
        .await;
    let drift = scheduled(&demo.stdout, "prompt_drift").expect("prompt_drift scheduled");
    let looping = scheduled(&demo.stdout, "infinite_loop").expect("infinite_loop scheduled");
    let slow = scheduled(&demo.stdout, "gradual_drift").expect("gradual_drift scheduled");

    let page = demo.http.get(format!("{dashboard}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("agent-immune"), "{html}");

    // Baselines learned: every simulated agent leaves INITIALIZING.
    let agents_url = format!("{dashboard}/api/v1/agents");
    let learned = demo
        .wait_for("learned baselines", Duration::from_secs(60), async |d| {
            let agents = d.get(&agents_url).await?;
            let list = agents["agents"].as_array()?.clone();
            (list.len() == 8 && list.iter().all(|a| a["state"] != "INITIALIZING")).then_some(list)
        })
        .await;
    for agent in &learned {
        assert_eq!(agent["baseline"]["ready"], true, "{agent}");
    }

    // The prompt drift: detected, diagnosed, quarantined, healed, passed
    // probation, with no operator.
    let drift_events = format!("{dashboard}/api/v1/events?agent={drift}&limit=500");
    let events = demo
        .wait_for(
            "the drift agent passing probation",
            Duration::from_secs(120),
            async |d| {
                let events = d.get(&drift_events).await?;
                passed_probation(&events).then_some(events)
            },
        )
        .await;
    for name in [
        "agent_immune.infection",
        "agent_immune.diagnosis",
        "agent_immune.quarantine",
        "agent_immune.healing_action",
        "agent_immune.healing_result",
        "agent_immune.probation",
    ] {
        assert!(
            !events_named(&events, name).is_empty(),
            "{drift}: no {name}"
        );
    }
    let diagnosis = events_named(&events, "agent_immune.diagnosis")[0];
    assert!(
        diagnosis["body"].as_str().unwrap().contains("prompt_"),
        "{diagnosis}"
    );

    // The runaway loop needs an approval; the CLI gives it with the key.
    let pending_url = format!("{dashboard}/api/v1/approvals?status=pending");
    demo.wait_for(
        "the loop's approval request",
        Duration::from_secs(120),
        async |d| {
            let pending = d.get(&pending_url).await?;
            pending
                .as_array()?
                .iter()
                .any(|a| a["agent_id"] == looping.as_str())
                .then_some(())
        },
    )
    .await;
    let approve = Command::new(BIN)
        .args(["approve", &looping, "--api", &dashboard])
        .env("AGENT_IMMUNE_API_KEY", &key)
        .output()
        .await
        .unwrap();
    assert!(
        approve.status.success(),
        "approve failed: {}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let loop_events = format!("{dashboard}/api/v1/events?agent={looping}&limit=500");
    let events = demo
        .wait_for(
            "the approved loop agent passing probation",
            Duration::from_secs(120),
            async |d| {
                let events = d.get(&loop_events).await?;
                passed_probation(&events).then_some(events)
            },
        )
        .await;
    let decided = events_named(&events, "agent_immune.approval_decided");
    assert_eq!(decided.len(), 1, "{events}");
    assert_eq!(
        decided[0]["attributes"]["agent_immune.decision"],
        "approved"
    );

    // The slow drift was learned, never alarmed.
    let slow_events = demo
        .get(&format!("{dashboard}/api/v1/events?agent={slow}&limit=500"))
        .await
        .unwrap();
    assert!(
        events_named(&slow_events, "agent_immune.infection").is_empty(),
        "{slow_events}"
    );

    // Ctrl-C (SIGINT) stops it cleanly, with the fleet's report.
    let pid = demo.child.id().unwrap();
    let killed = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), demo.child.wait())
        .await
        .expect("the demo stops within 30 s of Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}:\n{}", demo.output());
    demo.wait_for("the closing report", Duration::from_secs(5), async |d| {
        d.stdout
            .find(|l| l.starts_with("demo: sent ").then_some(()))
    })
    .await;
}
