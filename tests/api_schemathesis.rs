//! The OpenAPI document is exact: schemathesis (from PyPI, in the test
//! virtualenv) generates requests from the document the real binary serves
//! at /api/v1/openapi.json, valid and invalid ones, and runs every check
//! (status codes and response schemas as documented, valid data accepted,
//! invalid data refused, no server errors). Any finding fails the test; the
//! seed in its output reproduces the run.

mod common;

use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, python};
use std::time::Duration;

const KEY: &str = "schemathesis-key-0123456789abcdef";
/// Cases per operation and phase: enough to find a looser document, few
/// enough that the run stays around two minutes.
const MAX_EXAMPLES: &str = "25";
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_matches_the_server() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = TestPipeline::default()
        .state_in(data.path())
        .api(format!("127.0.0.1:{port}"))
        .write_to(data.path());
    let _bin = Binary::start(&config, &[("AGENT_IMMUNE_API_KEY", KEY)]).await;

    let base = format!("http://127.0.0.1:{port}");
    let schemathesis = python().with_file_name("schemathesis");
    assert!(
        schemathesis.exists(),
        "{} missing: run tests/run.sh (schemathesis is in tests/python/requirements.txt)",
        schemathesis.display()
    );
    let settings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let run = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&settings)
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
        ])
        .args(["--checks", "all", "--mode", "all"])
        .args(["--header", &format!("X-API-Key: {KEY}")])
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "2"])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(data.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("schemathesis finished in time")
        .expect("start schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found the document and the server disagreeing:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every documented operation was tested ("Selected: 19/19", "Tested: 19").
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in the report:\n{report}"))
            .to_string()
    };
    let selected = field("Selected:");
    let tested = field("Tested:");
    assert_eq!(selected, format!("{tested}/{tested}"), "{report}");
}
