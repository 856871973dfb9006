//! Query string parameters: only the known ones, each checked, and a
//! refusal that names the parameter.

use super::error::ApiError;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use std::collections::BTreeMap;

/// Longest value of one parameter.
const MAX_VALUE_CHARS: usize = 1024;

pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The parameters, refusing any not in `known`.
    pub fn new(
        query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(map) = query
            .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
        for (key, value) in &map {
            if !known.contains(&key.as_str()) {
                let shown: String = key.chars().take(64).collect();
                let expected = if known.is_empty() {
                    "this endpoint takes no parameters".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                return Err(ApiError::field(
                    shown,
                    format!("unknown parameter ({expected})"),
                ));
            }
            if value.chars().count() > MAX_VALUE_CHARS {
                return Err(ApiError::field(
                    key.clone(),
                    format!("longer than {MAX_VALUE_CHARS} characters"),
                ));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A non-negative integer parameter, at most `max` (given empty, it is
    /// no integer and refused, as the OpenAPI document says).
    pub fn number(&self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let n: u64 = raw.parse().map_err(|_| {
            ApiError::field(key, format!("must be a non-negative integer, got {raw:?}"))
        })?;
        if n > max {
            return Err(ApiError::field(
                key,
                format!("{n} is above the limit of {max}"),
            ));
        }
        Ok(Some(n))
    }
}
