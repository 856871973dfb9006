//! The deployment example in `deploy/`, checked as far as it can be without
//! a Docker engine (none runs here).
//!
//! Run for real: the compose file's agent-immune command, environment and
//! config file (the real binary); its Rotel flags (the Rotel binary from the
//! test virtualenv); its simulator command (the real binary); Tempo and Loki
//! replaced by OTLP receivers in this test listening on the ports their
//! configs name, Loki's on its OTLP/HTTP path; Prometheus replaced by this
//! test scraping the target its config names. Every address in the compose
//! file is moved to a loopback port by one table, so a service that points
//! at the wrong port of another fails here.
//!
//! Checked, not run: the dashboard's LogQL against the events that really
//! arrived, mapped to Loki's labels by Loki's documented OTLP rules (as in
//! Loki 3.7's `pkg/loghttp/push/otlp.go`); its PromQL against the real
//! `/metrics`; data source uids and the trace links; the Dockerfile's
//! inputs. Never run: the containers themselves, Grafana, Loki, Tempo,
//! Prometheus, `docker compose up`, `docker build`.
//!
//! The YAML files are read with serde-saphyr (the compose file with its
//! compose-style interpolation); the pieces the tests share are in
//! `tests/deploy_support/`.

mod common;
mod deploy_support;

use deploy_support::compose::Compose;
use deploy_support::files::{dashboard, deploy, parse_yaml, port, read, read_yaml, repo};
use deploy_support::grafana::{
    DataSource, Query, dashboard_queries, datasource_of_kind, datasource_refs, datasources,
    grafana_unescape, loki_queries,
};
use deploy_support::localizer::{Localizer, port_of};
use deploy_support::logql_check::logql_problems;
use deploy_support::processes::{Proc, wait_listening};
use deploy_support::records::{of_agent, str_list};
use deploy_support::stand_ins::fake_loki;
use deploy_support::{loki_mapping, queries};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn the_yaml_reader_reads_yaml_and_refuses_malformed_yaml() {
    let doc = parse_yaml(
        "# c\na:\n  b: \"x # not a comment\"  # comment\n  list:\n  - one\n  - k: v\n    k2: 'it''s'\n  flow: [\"-x\", y]\nc: it's plain\nport: 3100\nquoted: \"6\"\n",
    )
    .unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "a": {"b": "x # not a comment", "list": ["one", {"k": "v", "k2": "it's"}], "flow": ["-x", "y"]},
            "c": "it's plain",
            "port": 3100,
            "quoted": "6"
        })
    );
    for bad in [
        "a: 1\na: 2\n",
        "a:\n  b: 1\n   c: 2\n",
        "a:\n\t- b\n",
        "a: \"open\n",
        "- a\nb: c\n",
    ] {
        assert!(parse_yaml(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn compose_values_are_interpolated_as_compose_does() {
    let compose = Compose::parse(
        "services:\n  s:\n    environment:\n      SET_OR_DEFAULT: \"${SET:-d}\"\n      UNSET_OR_DEFAULT: \"${UNSET:-d}\"\n      EMPTY_OR_DEFAULT: \"${EMPTY:-d}\"\n      EMPTY_IF_SET: \"${EMPTY-d}\"\n      UNSET_IS_EMPTY: \"${UNSET:-}\"\n      ESCAPED: \"$$SET\"\n      BARE: \"$SET/x\"\n      NUMBER: 6\n",
        &[("SET", "v"), ("EMPTY", "")],
    );
    let expected = [
        ("SET_OR_DEFAULT", "v"),
        ("UNSET_OR_DEFAULT", "d"),
        ("EMPTY_OR_DEFAULT", "d"),
        ("EMPTY_IF_SET", ""),
        ("UNSET_IS_EMPTY", ""),
        ("ESCAPED", "$SET"),
        ("BARE", "v/x"),
        ("NUMBER", "6"),
    ];
    assert_eq!(
        compose.environment("s"),
        expected
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    );
}

#[test]
fn every_yaml_file_in_deploy_parses_to_a_map() {
    let mut seen = 0;
    let mut dirs = vec![deploy("")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let doc =
                    parse_yaml(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(doc.is_object(), "{}: not a map", path.display());
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 6,
        "compose, loki, tempo, prometheus and two Grafana provisioning files; read {seen}"
    );
}

#[test]
fn the_compose_file_wires_the_stack_with_pinned_images() {
    let compose = Compose::load();
    let names: BTreeSet<&str> = compose.services().keys().map(String::as_str).collect();
    for needed in [
        "rotel",
        "agent-immune",
        "tempo",
        "loki",
        "grafana",
        "prometheus",
        "simulator",
    ] {
        assert!(names.contains(needed), "no {needed} service: {names:?}");
    }
    let volumes = compose.0["volumes"].as_object().expect("top-level volumes");
    for (name, service) in compose.services() {
        // Built from this repository, or a versioned image (never `latest`).
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        if service["build"].is_object() {
            let dockerfile = service["build"]["dockerfile"]
                .as_str()
                .expect("build.dockerfile");
            let context = deploy(service["build"]["context"].as_str().expect("build.context"));
            assert!(
                context.join(dockerfile).is_file(),
                "{name}: {dockerfile} not in {}",
                context.display()
            );
        } else {
            let (_, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
            assert!(
                tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
                "{name}: {image} is not pinned to a version"
            );
        }
        for (source, target) in compose.mounts(name) {
            assert!(target.starts_with('/'), "{name}: mount target {target}");
            if source.starts_with('.') {
                assert!(
                    deploy(&source).exists(),
                    "{name}: mounts {source}, which is not in deploy/"
                );
            } else {
                assert!(
                    volumes.contains_key(&source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        for dependency in compose.list(name, "depends_on") {
            assert!(
                names.contains(dependency.as_str()),
                "{name} depends on unknown {dependency}"
            );
        }
    }
    // Rotel's image prepends its own flags unless the entrypoint is replaced;
    // the test runs exactly `start` + the listed flags.
    assert_eq!(compose.list("rotel", "entrypoint"), ["/rotel"]);
    assert_eq!(compose.list("rotel", "command")[0], "start");
}

#[test]
fn the_agent_immune_config_validates_with_the_compose_environment() {
    let compose = Compose::load();
    let command = compose.list("agent-immune", "command");
    let config = command
        .iter()
        .position(|a| a == "--config")
        .map(|i| command[i + 1].clone())
        .expect("agent-immune's command names its --config");
    let tmp = tempfile::tempdir().unwrap();
    let local = Localizer::new(&compose, tmp.path());
    let config_file = local.path(&compose, "agent-immune", &config);
    assert_eq!(PathBuf::from(&config_file), deploy("agent-immune.toml"));

    // Exactly the environment compose gives the container (no host variables).
    let env = compose.environment("agent-immune");
    let validate = |env: &BTreeMap<String, String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"))
            .args(["validate", "--config", &config_file])
            .env_clear()
            .envs(env)
            .output()
            .unwrap()
    };
    let out = validate(&env);
    assert!(
        out.status.success(),
        "validate failed with the compose environment:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));

    // The file does depend on that environment: without it, validate names what is missing.
    let out = validate(&BTreeMap::new());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not set"));
}

#[test]
fn the_dashboard_uses_only_provisioned_datasources() {
    let provisioned = datasources();
    let by_uid: BTreeMap<&str, &DataSource> =
        provisioned.iter().map(|d| (d.uid.as_str(), d)).collect();
    assert_eq!(
        by_uid.len(),
        provisioned.len(),
        "data source uids are unique"
    );
    let dash = dashboard();
    assert!(
        !read(&deploy("grafana/dashboards/agent-immune.json")).contains("${DS_"),
        "no import placeholders"
    );
    let mut refs = Vec::new();
    datasource_refs(&dash, "dashboard".into(), &mut refs);
    assert!(refs.len() > 10, "{refs:?}");
    for (place, ds) in &refs {
        let uid = ds["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{place}: data source without uid"));
        if uid == "-- Grafana --" {
            continue; // Grafana's built-in annotations
        }
        let provisioned = by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{place}: data source uid {uid:?} is not provisioned"));
        assert_eq!(
            ds["type"].as_str(),
            Some(provisioned.kind.as_str()),
            "{place}: type of {uid}"
        );
    }
    let kinds: BTreeSet<String> = dashboard_queries(&dash)
        .into_iter()
        .map(|q| q.kind)
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["loki".to_string(), "prometheus".to_string()])
    );

    // Grafana loads the file from where the compose file mounts it.
    let compose = Compose::load();
    let provider = read_yaml("grafana/provisioning/dashboards/dashboards.yaml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let tmp = tempfile::tempdir().unwrap();
    let local = Localizer::new(&compose, tmp.path());
    assert_eq!(
        PathBuf::from(local.path(&compose, "grafana", path)),
        deploy("grafana/dashboards")
    );
    let home = compose.environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert_eq!(
        PathBuf::from(local.path(&compose, "grafana", &home)),
        deploy("grafana/dashboards/agent-immune.json")
    );
    for dir in ["datasources", "dashboards"] {
        let target = format!("/etc/grafana/provisioning/{dir}");
        assert_eq!(
            PathBuf::from(local.path(&compose, "grafana", &target)),
            deploy(&format!("grafana/provisioning/{dir}"))
        );
    }
}

#[test]
fn trace_ids_link_to_tempo_and_back() {
    let tempo = datasource_of_kind("tempo");
    let loki_ds = datasource_of_kind("loki");
    let derived = loki_ds.json_data["derivedFields"]
        .as_array()
        .expect("Loki derivedFields");
    let link = derived
        .iter()
        .find(|f| f["datasourceUid"].as_str() == Some(tempo.uid.as_str()))
        .expect("a derived field linking to the Tempo data source");
    assert_eq!(
        link["matcherType"], "label",
        "matches structured metadata, not the log line"
    );
    assert_eq!(link["matcherRegex"].as_str(), Some(loki_mapping::TRACE_ID));
    assert_eq!(
        grafana_unescape(link["url"].as_str().unwrap()),
        "${__value.raw}"
    );
    assert_eq!(
        tempo.json_data["tracesToLogsV2"]["datasourceUid"].as_str(),
        Some(loki_ds.uid.as_str())
    );

    // The events table links its trace column to Tempo in Explore.
    let dash = dashboard();
    let table = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "table")
        .expect("an events table");
    let text = table.to_string();
    let organize = &table["transformations"][1]["options"];
    let renamed = organize["renameByName"][loki_mapping::TRACE_ID]
        .as_str()
        .expect("trace_id column");
    let overrides = table["fieldConfig"]["overrides"].as_array().unwrap();
    let trace = overrides
        .iter()
        .find(|o| o["matcher"]["options"].as_str() == Some(renamed))
        .expect("an override on the trace column");
    let url = trace["properties"][0]["value"][0]["url"]
        .as_str()
        .expect("a link url");
    assert!(url.starts_with("/explore?"), "{url}");
    assert!(url.contains(&format!("\"uid\":\"{}\"", tempo.uid)), "{url}");
    assert!(url.contains("${__value.raw}"), "{url}");
    assert!(text.contains("extractFields"));
}

#[test]
fn addresses_agree_across_the_config_files() {
    let compose = Compose::load();
    let env = compose.environment("agent-immune");
    let loki_cfg = read_yaml("loki/loki.yaml");
    let tempo_cfg = read_yaml("tempo/tempo.yaml");
    let loki_port = port(&loki_cfg["server"]["http_listen_port"]);
    let tempo_http = port(&tempo_cfg["server"]["http_listen_port"]);
    let tempo_grpc = port_of(
        tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
            .as_str()
            .unwrap(),
    );

    // agent-immune -> Loki's OTLP path, and -> Tempo's OTLP receiver.
    let events = &env["LOKI_OTLP_HTTP"];
    assert!(
        events.starts_with("http://loki:") && events.ends_with("/otlp"),
        "{events}"
    );
    assert_eq!(port_of(events), loki_port);
    assert_eq!(env["TEMPO_OTLP_GRPC"], format!("http://tempo:{tempo_grpc}"));
    // Rotel -> agent-immune's receiver; the simulator -> Rotel; agent-immune -> the simulator.
    let rotel = compose.list("rotel", "command");
    let flag = |args: &[String], name: &str| {
        args[args.iter().position(|a| a == name).unwrap() + 1].clone()
    };
    assert_eq!(
        flag(&rotel, "--otlp-exporter-endpoint"),
        format!("http://agent-immune:{}", port_of(&env["OTLP_GRPC_LISTEN"]))
    );
    let simulator = compose.list("simulator", "command");
    assert_eq!(
        flag(&simulator, "--endpoint"),
        format!(
            "http://rotel:{}",
            port_of(&flag(&rotel, "--otlp-grpc-endpoint"))
        )
    );
    assert_eq!(
        env["AGENT_CONTROL_URL"],
        format!("http://simulator:{}", flag(&simulator, "--control-port"))
    );
    // Prometheus scrapes the API port; Grafana reaches each backend on its port.
    let prometheus = read_yaml("prometheus/prometheus.yaml");
    let target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(
        target,
        format!("agent-immune:{}", port_of(&env["API_LISTEN"]))
    );
    for ds in datasources() {
        let expected = match ds.kind.as_str() {
            "loki" => format!("http://loki:{loki_port}"),
            "tempo" => format!("http://tempo:{tempo_http}"),
            "prometheus" => "http://prometheus:9090".to_string(), // Prometheus's default listen port
            other => panic!("unexpected data source {other}"),
        };
        assert_eq!(ds.url, expected, "data source {}", ds.name);
    }
    assert!(
        !compose
            .list("prometheus", "command")
            .iter()
            .any(|a| a.contains("web.listen-address"))
    );
}

#[test]
fn the_dockerfile_copies_everything_a_release_build_reads() {
    let dockerfile = read(&deploy("Dockerfile"));
    let mut copied = BTreeSet::new();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repository"
            );
            copied.insert(source.to_string());
        }
    }
    // What the build reads: the manifest, build.rs and the protos it compiles,
    // the sources, and whatever they include_str! from outside src/.
    let mut needed =
        BTreeSet::from(["Cargo.toml", "Cargo.lock", "build.rs", "src"].map(String::from));
    if read(&repo().join("build.rs")).contains("\"proto\"") {
        needed.insert("proto".into());
    }
    let mut files = vec![repo().join("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = read(&path);
        for piece in text
            .split("include_str!(\"")
            .skip(1)
            .chain(text.split("include_bytes!(\"").skip(1))
        {
            let rel = &piece[..piece.find('"').unwrap()];
            let target = path.parent().unwrap().join(rel).canonicalize().unwrap();
            let top = target
                .strip_prefix(repo())
                .unwrap()
                .components()
                .next()
                .unwrap();
            needed.insert(top.as_os_str().to_string_lossy().into_owned());
        }
    }
    assert!(
        needed.contains("pipelines"),
        "the embedded default pipeline: {needed:?}"
    );
    let missing: Vec<_> = needed.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile does not copy {missing:?}"
    );
    // The context is the repository root; the ignore file lets exactly those through.
    let ignore = read(&deploy("Dockerfile.dockerignore"));
    let allowed: BTreeSet<String> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(String::from)
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "an allowlist");
    assert_eq!(allowed, copied);
}

#[test]
fn lokis_mapping_and_the_query_check_catch_names_loki_would_not_hold() {
    use agent_immune::exporters::events::otlp_logs::to_logs_request;
    use agent_immune::immune::event::{AttrValue, Event};

    assert_eq!(loki_mapping::label_name("service.name"), "service_name");
    assert_eq!(loki_mapping::label_name("123invalid"), "key_123invalid");
    assert_eq!(loki_mapping::label_name("a..b/c"), "a_b_c");

    let event = Event {
        body: "planner infected".into(),
        attributes: vec![
            ("agent_immune.max_deviation".into(), AttrValue::Double(7.25)),
            (
                "agent_immune.anomalies".into(),
                AttrValue::StrList(vec!["token_spike".into(), "cost_spike".into()]),
            ),
        ],
        ..agent_immune::testdata::infection_event()
    };
    let entries = loki_mapping::entries(&to_logs_request(&[event], 42));
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(
        entry.stream,
        BTreeMap::from([("service_name".to_string(), "agent-immune".to_string())])
    );
    for (name, value) in [
        ("event_name", "agent_immune.infection"),
        ("event_id", "ev-1"),
        ("gen_ai_agent_id", "planner"),
        ("agent_immune_max_deviation", "7.25"),
        ("agent_immune_anomalies", r#"["token_spike","cost_spike"]"#),
        ("trace_id", "abababababababababababababababab"),
        ("span_id", "cdcdcdcdcdcdcdcd"),
        ("severity_text", "WARN"),
        ("severity_number", "13"),
        ("scope_name", "agent-immune"),
        ("observed_timestamp", "42"),
    ] {
        assert_eq!(
            entry.metadata.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(entry.line, "planner infected");

    let check = |expr: &str| {
        let query = Query {
            kind: "loki".into(),
            place: "q".into(),
            expr: expr.into(),
        };
        logql_problems(&query, &entries).join("; ")
    };
    let good = r#"max by (gen_ai_agent_id) (max_over_time({service_name="agent-immune"} | event_name="agent_immune.infection" | gen_ai_agent_id=~"$agent" | unwrap agent_immune_max_deviation [$__auto]))"#;
    assert_eq!(check(good), "");
    assert!(check(r#"{gen_ai_agent_id="planner"}"#).contains("structured metadata"));
    assert!(check(r#"{service_name="agent_immune"}"#).contains("no stream has"));
    assert!(
        check(r#"{service_name="agent-immune"} | agent_immune_maxdeviation > 3"#)
            .contains("no event carries")
    );
    assert!(
        check(r#"{service_name="agent-immune"} | event_name="agent_immune.infektion""#)
            .contains("no event has")
    );
    assert!(
        check(r#"sum by (agent) (count_over_time({service_name="agent-immune"} [5m]))"#)
            .contains("no event carries agent")
    );
    assert!(
        check(r#"sum(sum_over_time({service_name="agent-immune"} | unwrap event_id [5m]))"#)
            .contains("not a number")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_on_loopback_delivers_what_the_dashboard_queries() {
    // The key compose passes through from the host environment.
    let api_key = "deploy-examples-test-key-0123456789abcdef";
    let compose = Compose::load_with_host_env(&[("AGENT_IMMUNE_API_KEY", api_key)]);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let local = Localizer::new(&compose, &tmp.path().join("volumes"));

    // Tempo and Loki stand-ins, on the ports their own configs listen on.
    let tempo_cfg = read_yaml("tempo/tempo.yaml");
    let tempo_grpc = port_of(
        tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
            .as_str()
            .unwrap(),
    );
    let (_, tempo) = common::downstream_collector_at(local.addr("tempo", tempo_grpc)).await;
    let loki_cfg = read_yaml("loki/loki.yaml");
    let loki_port = port(&loki_cfg["server"]["http_listen_port"]);
    let loki_sink = fake_loki(local.addr("loki", loki_port)).await;

    // agent-immune: the compose command, environment and mounted config.
    let env: BTreeMap<String, String> = compose
        .environment("agent-immune")
        .into_iter()
        .map(|(k, v)| {
            let v = local.value(&compose, "agent-immune", &v);
            (k, v)
        })
        .collect();
    assert_eq!(env["AGENT_IMMUNE_API_KEY"], api_key);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_agent-immune"));
    let args = local.args(
        &compose,
        "agent-immune",
        &compose.list("agent-immune", "command"),
    );
    let mut immune = Proc::spawn("agent-immune", &binary, &args, &env, &logs);
    let api = format!("http://{}", env["API_LISTEN"]);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        immune.assert_running();
        let ready = http.get(format!("{api}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent-immune never became ready on {api}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Rotel with the compose file's flags.
    let rotel_args = local.args(&compose, "rotel", &compose.list("rotel", "command"));
    let mut rotel = Proc::spawn(
        "rotel",
        &common::rotel_agent(),
        &rotel_args,
        &BTreeMap::new(),
        &logs,
    );
    let rotel_grpc = compose.list("rotel", "command");
    let rotel_grpc = port_of(
        &rotel_grpc[rotel_grpc
            .iter()
            .position(|a| a == "--otlp-grpc-endpoint")
            .unwrap()
            + 1],
    );
    wait_listening("rotel", local.addr("rotel", rotel_grpc), &mut rotel).await;

    // The simulated fleet with the compose file's command (its first
    // infection is scheduled 20 s in).
    let sim_args = local.args(&compose, "simulator", &compose.list("simulator", "command"));
    let mut simulator = Proc::spawn("simulator", &binary, &sim_args, &BTreeMap::new(), &logs);

    let infection = loki_sink
        .wait_for(
            "the looping agent's infection at Loki",
            Duration::from_secs(120),
            |s| {
                s.records().into_iter().find(|r| {
                    common::event_name(r) == "agent_immune.infection"
                        && str_list(r, "agent_immune.anomalies")
                            .contains(&"tool_explosion".to_string())
                })
            },
        )
        .await;
    simulator.assert_running();
    rotel.assert_running();
    let agent = common::attr_str(&infection, "gen_ai.agent.id")
        .expect("agent id")
        .to_string();

    // The operator approves (through the API, with the key compose passes
    // through); then the agent is healed and passes probation.
    let next = loki_sink
        .wait_for(
            "an approval request or a healing action",
            Duration::from_secs(60),
            |s| {
                let records = s.records();
                [
                    "agent_immune.approval_requested",
                    "agent_immune.healing_action",
                ]
                .into_iter()
                .find(|name| !of_agent(&records, name, &agent).is_empty())
            },
        )
        .await;
    if next == "agent_immune.approval_requested" {
        let answer = http
            .post(format!("{api}/api/v1/agents/{agent}/approve"))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "approve: {}", answer.status());
    }
    loki_sink
        .wait_for("probation passed", Duration::from_secs(90), |s| {
            of_agent(&s.records(), "agent_immune.probation", &agent)
                .iter()
                .any(|r| common::attr_str(r, "agent_immune.result") == Some("passed"))
                .then_some(())
        })
        .await;

    // Loki got OTLP/HTTP protobuf on its native OTLP path.
    for push in loki_sink.pushes.lock().unwrap().iter() {
        assert_eq!(
            (push.method.as_str(), push.path.as_str()),
            ("POST", "/otlp/v1/logs")
        );
        assert_eq!(push.content_type, "application/x-protobuf");
    }

    // Every name and literal of every LogQL query Grafana runs is in what
    // Loki holds (waiting out delivery of the last events).
    let queries = loki_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = loki_sink.changed.notified();
        let entries = loki_sink.entries();
        let problems: Vec<String> = queries
            .iter()
            .flat_map(|q| logql_problems(q, &entries))
            .collect();
        if problems.is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!(
                "the dashboard queries what Loki would not hold:\n{}",
                problems.join("\n")
            );
        }
    }

    // The infection's trace id, as Loki stores it, is a trace Tempo received:
    // the link from the event opens the offending turn.
    let entries = loki_sink.entries();
    let stored = entries
        .iter()
        .find(|e| e.label("event_id") == common::attr_str(&infection, "event.id"))
        .expect("the infection as a Loki entry");
    assert_eq!(
        stored.stream.get("service_name").map(String::as_str),
        Some("agent-immune")
    );
    let trace_id = stored
        .metadata
        .get(loki_mapping::TRACE_ID)
        .expect("trace_id structured metadata")
        .clone();
    assert_eq!(trace_id.len(), 32);
    assert!(
        stored.line.contains(&agent),
        "the log line is the event's body: {:?}",
        stored.line
    );
    let traces: Vec<String> = tempo
        .traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter())
        .map(|s| hex::encode(&s.trace_id))
        .collect();
    assert!(
        traces.contains(&trace_id),
        "Tempo never got trace {trace_id} ({} spans)",
        traces.len()
    );

    // Prometheus's target serves every metric and label the dashboard's PromQL uses.
    let prometheus = read_yaml("prometheus/prometheus.yaml");
    let target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let scrape = http
        .get(format!(
            "http://{}/metrics",
            local.address("prometheus", target)
        ))
        .send()
        .await
        .unwrap();
    let content_type = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    let metrics = scrape.text().await.unwrap();
    for q in dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| q.kind == "prometheus")
    {
        let names = queries::names(&q.expr).unwrap();
        assert!(
            !names.metrics.is_empty(),
            "{}: no metric in {:?}",
            q.place,
            q.expr
        );
        for metric in &names.metrics {
            assert!(
                metrics.contains(&format!("# TYPE {metric} ")),
                "{}: /metrics has no {metric}",
                q.place
            );
            if q.expr.contains("rate(") {
                assert!(
                    metrics.contains(&format!("# TYPE {metric} counter")),
                    "{}: rate of a non-counter {metric}",
                    q.place
                );
            }
            for label in &names.labels {
                assert!(
                    metrics
                        .lines()
                        .any(|l| l.starts_with(&format!("{metric}{{"))
                            && l.contains(&format!("{label}=\""))),
                    "{}: {metric} has no label {label}",
                    q.place
                );
            }
        }
    }

    // The compose healthcheck's command works against the running API.
    let check = compose.service("agent-immune")["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .clone();
    let check: Vec<String> = check
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(check[..2], ["CMD", "agent-immune"]);
    let out = tokio::process::Command::new(&binary)
        .args(local.args(&compose, "agent-immune", &check[2..]))
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "healthcheck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&agent));

    simulator.assert_running();
    immune.assert_running();
}
