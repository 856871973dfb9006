//! The label names and literal values a LogQL or PromQL query uses.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Var(String),
    Op(&'static str),
    Open(char),
    Close(char),
    Comma,
    Pipe,
    Other(char),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: &'static str,
    /// The literal compared with; None for a number or a dashboard variable.
    pub literal: Option<String>,
}

#[derive(Debug, Default)]
pub struct Names {
    /// Inside `{...}`: index labels.
    pub selector: Vec<Matcher>,
    /// Label filters after `|`.
    pub filters: Vec<Matcher>,
    /// `by (...)`, `without (...)`, `unwrap x`.
    pub labels: Vec<String>,
    pub unwrapped: Vec<String>,
    /// Identifiers that are neither matched labels nor keywords nor
    /// functions: PromQL metric names.
    pub metrics: Vec<String>,
}

fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let two = |i: usize, c: char| chars.get(i + 1) == Some(&c);
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '"' | '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string in {expr:?}")),
                        Some('\\') if c == '"' => {
                            s.push(*chars.get(i + 1).unwrap_or(&'\\'));
                            i += 2;
                        }
                        Some(&q) if q == c => break,
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(if s.starts_with('$') {
                    Tok::Var(s)
                } else {
                    Tok::Str(s)
                });
            }
            '[' => {
                // A range or subquery: durations and variables only.
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| format!("unterminated [ in {expr:?}"))?;
                i += end + 1;
            }
            '{' | '(' => {
                out.push(Tok::Open(c));
                i += 1;
            }
            '}' | ')' => {
                out.push(Tok::Close(c));
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '|' if two(i, '=') || two(i, '~') => {
                out.push(Tok::Op("line filter"));
                i += 2;
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '!' if two(i, '=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            '!' if two(i, '~') => {
                out.push(Tok::Op("!~"));
                i += 2;
            }
            '=' if two(i, '~') => {
                out.push(Tok::Op("=~"));
                i += 2;
            }
            '=' if two(i, '=') => {
                out.push(Tok::Op("=="));
                i += 2;
            }
            '=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            '>' | '<' => {
                let op = match (c, two(i, '=')) {
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    _ => "<",
                };
                out.push(Tok::Op(op));
                i += if op.len() == 2 { 2 } else { 1 };
            }
            '$' => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push(Tok::Var(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            other => {
                out.push(Tok::Other(other));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Keywords, and aggregations (which may be followed by `by` rather than `(`).
const KEYWORDS: [&str; 26] = [
    "by",
    "without",
    "unwrap",
    "and",
    "or",
    "unless",
    "bool",
    "on",
    "ignoring",
    "offset",
    "group_left",
    "group_right",
    "keep",
    "drop",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

pub fn names(expr: &str) -> Result<Names, String> {
    let toks = tokens(expr)?;
    let mut names = Names::default();
    let mut in_selector = false;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open('{') => in_selector = true,
            Tok::Close('}') => in_selector = false,
            Tok::Ident(kw)
                if (kw == "by" || kw == "without") && toks.get(i + 1) == Some(&Tok::Open('(')) =>
            {
                i += 2;
                while let Some(tok) = toks.get(i) {
                    match tok {
                        Tok::Ident(label) => names.labels.push(label.clone()),
                        Tok::Comma => {}
                        Tok::Close(')') => break,
                        other => {
                            return Err(format!("unexpected {other:?} in a grouping of {expr:?}"));
                        }
                    }
                    i += 1;
                }
            }
            Tok::Ident(kw) if kw == "unwrap" => {
                // `unwrap x` or `unwrap duration(x)`
                let label = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
                    (Some(Tok::Ident(_)), Some(Tok::Open('(')), Some(Tok::Ident(x))) => {
                        i += 3;
                        x
                    }
                    (Some(Tok::Ident(x)), _, _) => {
                        i += 1;
                        x
                    }
                    other => {
                        return Err(format!("unwrap without a label in {expr:?}: {other:?}"));
                    }
                };
                names.labels.push(label.clone());
                names.unwrapped.push(label.clone());
            }
            Tok::Ident(name) => match (toks.get(i + 1), toks.get(i + 2)) {
                (Some(Tok::Op(op)), Some(value)) if *op != "line filter" => {
                    let literal = match value {
                        Tok::Str(s) => Some(s.clone()),
                        Tok::Num(_) | Tok::Var(_) => None,
                        other => return Err(format!("{name} {op} {other:?} in {expr:?}")),
                    };
                    let matcher = Matcher {
                        name: name.clone(),
                        op,
                        literal,
                    };
                    if in_selector {
                        names.selector.push(matcher);
                    } else {
                        names.filters.push(matcher);
                    }
                    i += 2;
                }
                (Some(Tok::Open('(')), _) => {} // a function
                _ if KEYWORDS.contains(&name.as_str()) => {}
                _ => names.metrics.push(name.clone()),
            },
            _ => {}
        }
        i += 1;
    }
    Ok(names)
}
