//! The operator subcommands of the CLI (`agents`, `approvals`, `approve`,
//! `reject`, `heal`, `feedback`): they call the management API and print
//! tables. Exit codes: 0 done, 1 the API refused (the message says why),
//! 3 the API could not be reached.

use super::client::{AgentRow, ApiClient, ApprovalRow, ClientError, DEFAULT_API};
use crate::immune::vitals::UnixNanos;
use clap::{Args, Subcommand};
use std::fmt::Write;

/// Where the API is and the key to use.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the management API.
    #[arg(long, env = "AGENT_IMMUNE_API", default_value = DEFAULT_API)]
    pub api: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum OperatorCommand {
    /// List the monitored agents (state, deviation, last turn).
    Agents {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the approval queue (pending and rejected), with the diagnosis.
    Approvals {
        #[command(flatten)]
        api: ApiArgs,
        /// Only "pending" or only "rejected".
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve the pending healing of an agent (needs AGENT_IMMUNE_API_KEY).
    Approve {
        agent: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reject the pending healing of an agent (needs AGENT_IMMUNE_API_KEY).
    Reject {
        agent: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Heal an infected agent now (needs AGENT_IMMUNE_API_KEY).
    Heal {
        agent: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Tell agent-immune what really caused an agent's infection
    /// (false_positive, wrong_diagnosis, provider_outage, correct).
    Feedback {
        agent: String,
        cause: String,
        /// Free text kept in the service's log.
        #[arg(long)]
        notes: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// What the command printed, and how the process should exit.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

/// Runs `command` with `key` (from `AGENT_IMMUNE_API_KEY`).
pub async fn run(command: OperatorCommand, key: Option<String>) -> Outcome {
    match execute(command, key).await {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        },
        Err(e) => Outcome {
            stdout: String::new(),
            code: match e {
                ClientError::Unreachable { .. } => 3,
                _ => 1,
            },
            stderr: format!("agent-immune: {e}\n"),
        },
    }
}

async fn execute(command: OperatorCommand, key: Option<String>) -> Result<String, ClientError> {
    let client = |api: &ApiArgs| ApiClient::new(&api.api, key.clone());
    match command {
        OperatorCommand::Agents { api } => Ok(agents_table(&client(&api)?.agents().await?, now())),
        OperatorCommand::Approvals { api, status } => Ok(approvals_table(
            &client(&api)?.approvals(status.as_deref()).await?,
        )),
        OperatorCommand::Approve { agent, api } => {
            let row = client(&api)?.command(&agent, "approve").await?;
            Ok(format!(
                "approved: agent {} is {}\n",
                row.agent_id, row.state
            ))
        }
        OperatorCommand::Reject { agent, api } => {
            let row = client(&api)?.command(&agent, "reject").await?;
            Ok(format!(
                "rejected: agent {} is {}\n",
                row.agent_id, row.state
            ))
        }
        OperatorCommand::Heal { agent, api } => {
            let row = client(&api)?.command(&agent, "heal").await?;
            Ok(format!(
                "healing: agent {} is {}\n",
                row.agent_id, row.state
            ))
        }
        OperatorCommand::Feedback {
            agent,
            cause,
            notes,
            api,
        } => {
            let reply = client(&api)?
                .feedback(&agent, &cause, notes.as_deref())
                .await?;
            Ok(format!(
                "feedback recorded: agent {}, diagnosis {}, actual cause {}\n",
                reply.agent, reply.diagnosis, reply.actual_cause
            ))
        }
    }
}

fn now() -> UnixNanos {
    crate::pipeline::shard::now()
}

/// "12s", "5m", "3h", "2d" ago.
fn ago(since: UnixNanos, now: UnixNanos) -> String {
    if since == 0 {
        return "-".to_string();
    }
    let s = now.saturating_sub(since) / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Left-aligned columns, two spaces apart; cells cut at 60 characters.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    // Cells hold client text (agent ids, models, reasons): escaped, so a
    // row stays one line on the terminal.
    let cut = |s: &str| -> String {
        let s = &*crate::escape::controls(s);
        if s.chars().count() > 60 {
            let mut t: String = s.chars().take(59).collect();
            t.push('…');
            t
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn agents_table(agents: &[AgentRow], now: UnixNanos) -> String {
    if agents.is_empty() {
        return "no agents monitored yet\n".to_string();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let v = a.last_vitals.as_ref();
            vec![
                a.agent_id.clone(),
                a.state.clone(),
                ago(a.since, now),
                a.deviation.map_or("-".into(), |d| format!("{d:.1}σ")),
                a.baseline
                    .as_ref()
                    .map_or("-".into(), |b| b.turns.to_string()),
                v.map_or("-".into(), |v| format!("{:.0}ms", v.latency_ms)),
                v.map_or("-".into(), |v| {
                    v.input_tokens.saturating_add(v.output_tokens).to_string()
                }),
                v.and_then(|v| v.model.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "STATE",
            "SINCE",
            "DEVIATION",
            "TURNS",
            "LATENCY",
            "TOKENS",
            "MODEL",
        ],
        &rows,
    )
}

pub fn approvals_table(approvals: &[ApprovalRow]) -> String {
    if approvals.is_empty() {
        return "no approvals waiting\n".to_string();
    }
    let rows: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| {
            let lead = a.hypotheses.first();
            vec![
                a.agent_id.clone(),
                a.status(),
                a.state.clone(),
                format!("{:.1}σ", a.max_deviation),
                lead.map_or("-".into(), |h| {
                    format!("{} ({:.0}%)", h.diagnosis, h.confidence * 100.0)
                }),
                a.infection.description.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "AGENT",
            "APPROVAL",
            "STATE",
            "DEVIATION",
            "DIAGNOSIS",
            "INFECTION",
        ],
        &rows,
    );
    for a in approvals {
        let _ = writeln!(out, "\n{}: {}", a.agent_id, a.reasoning);
        for h in &a.hypotheses {
            let _ = writeln!(
                out,
                "  {:>3.0}% {}: {}",
                h.confidence * 100.0,
                h.diagnosis,
                h.reasoning
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long-cell".into(), "x".into()],
                vec!["y".into(), "z".repeat(70)],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A          BB");
        assert_eq!(lines[1], "long-cell  x");
        assert!(lines[2].ends_with('…'));
        assert_eq!(lines[2].chars().count(), 11 + 60);
    }

    #[test]
    fn ages_read_naturally() {
        let s = 1_000_000_000;
        assert_eq!(ago(0, 5 * s), "-");
        assert_eq!(ago(s, 13 * s), "12s");
        assert_eq!(ago(s, 601 * s), "10m");
        assert_eq!(ago(s, 3 * 86400 * s), "2d");
    }
}
