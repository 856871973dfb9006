//! `${env:VAR}` and `${env:VAR:-default}` in config values, as in the
//! Collector. Expansion is textual and never adds lines, so line numbers in
//! errors still point into the file the operator wrote.

/// Expands every `${env:NAME}` / `${env:NAME:-default}` using `lookup`.
/// An unset variable without a default is an error naming the variable and
/// its line; a `$$` escapes a literal `$`.
pub fn expand(
    source: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut line = 1;
    while let Some(pos) = rest.find('$') {
        let (before, after) = rest.split_at(pos);
        line += before.matches('\n').count();
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("$$") {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix("${env:") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err((line, "unterminated ${env:...} reference".to_string()));
        };
        let spec = &body[..end];
        if spec.contains('\n') {
            return Err((line, "unterminated ${env:...} reference".to_string()));
        }
        let (name, default) = match spec.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (spec, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err((line, format!("invalid environment variable name {name:?}")));
        }
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(value) if value.contains('\n') => {
                return Err((
                    line,
                    format!("environment variable {name} contains a newline"),
                ));
            }
            Some(value) => out.push_str(&value),
            None => {
                return Err((
                    line,
                    format!("environment variable {name} is not set and has no default"),
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let got = expand("a = \"${env:HOST}:4317\"\nb = \"${env:NOPE:-x}\"", env);
        assert_eq!(got, Ok("a = \"10.0.0.1:4317\"\nb = \"x\"".to_string()));
    }

    #[test]
    fn set_but_empty_wins_over_default() {
        assert_eq!(expand("${env:EMPTY:-d}", env), Ok(String::new()));
    }

    #[test]
    fn unset_without_default_names_variable_and_line() {
        let err = expand("a = 1\nb = \"${env:MISSING}\"", env).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("MISSING"), "{}", err.1);
    }

    #[test]
    fn dollar_escapes_and_plain_dollars_stay() {
        assert_eq!(
            expand("p = \"$$HOME $5\"", env),
            Ok("p = \"$HOME $5\"".into())
        );
    }

    #[test]
    fn rejects_bad_names_and_unterminated() {
        assert!(expand("${env:1X}", env).is_err());
        assert!(expand("${env:A-B}", env).is_err());
        assert!(expand("${env:HOST", env).is_err());
    }
}
