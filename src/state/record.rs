//! How a value is stored: a two-byte record version, then the value in
//! postcard (compact, with a frozen wire format).
//!
//! postcard is not self-describing: a type whose shape changed would be
//! misread or rejected. So each stored type names a version, bumped when its
//! shape changes; a record of another version is reported as stale and
//! skipped (the agent relearns) rather than misread.

use super::error::StateError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded record (a per-agent snapshot is a few KiB).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Longest key (agent ids are at most 512 bytes in the core).
pub const MAX_KEY_BYTES: usize = 4096;

/// A type the store keeps. Bump `VERSION` whenever the serialized shape
/// changes (a field added, removed, reordered or retyped, an enum variant
/// inserted before others): records written with another version are then
/// skipped with a warning instead of being decoded wrongly.
pub trait StateRecord: Serialize + DeserializeOwned {
    const VERSION: u16;
}

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Written by a build with another version of the type.
    Stale { stored: u16, expected: u16 },
    /// Not a valid encoding of the type.
    Malformed(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stale { stored, expected } => write!(
                f,
                "written as record version {stored}, this build reads version {expected}"
            ),
            Self::Malformed(message) => write!(f, "malformed: {message}"),
        }
    }
}

pub fn encode<T: StateRecord>(what: &str, value: &T) -> Result<Vec<u8>, StateError> {
    let bytes = postcard::to_extend(value, T::VERSION.to_le_bytes().to_vec()).map_err(|e| {
        StateError::Encode {
            what: what.to_string(),
            message: e.to_string(),
        }
    })?;
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(StateError::Encode {
            what: what.to_string(),
            message: format!(
                "{} bytes encoded, more than the {MAX_RECORD_BYTES} allowed per record",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

pub fn decode<T: StateRecord>(bytes: &[u8]) -> Result<T, RecordError> {
    let Some((version, body)) = bytes.split_first_chunk::<2>() else {
        return Err(RecordError::Malformed("shorter than its header".into()));
    };
    let stored = u16::from_le_bytes(*version);
    if stored != T::VERSION {
        return Err(RecordError::Stale {
            stored,
            expected: T::VERSION,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
    // Trailing bytes mean the stored shape was longer than this type's.
    if !rest.is_empty() {
        return Err(RecordError::Malformed(format!(
            "{} unexpected trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

pub fn check_key(what: &str, key: &str) -> Result<(), StateError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::Encode {
            what: what.to_string(),
            message: format!("key of {} bytes, more than {MAX_KEY_BYTES}", key.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        mean: f64,
        samples: u64,
    }
    impl StateRecord for V1 {
        const VERSION: u16 = 1;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        mean: f64,
    }
    impl StateRecord for V2 {
        const VERSION: u16 = 2;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ShorterV1 {
        mean: f64,
    }
    impl StateRecord for ShorterV1 {
        const VERSION: u16 = 1;
    }

    #[test]
    fn round_trip_keeps_nan_and_infinities() {
        let value = V1 {
            mean: f64::NAN,
            samples: 7,
        };
        let decoded: V1 = decode(&encode("v1", &value).unwrap()).unwrap();
        assert!(decoded.mean.is_nan() && decoded.samples == 7);
        let value = V1 {
            mean: f64::NEG_INFINITY,
            samples: u64::MAX,
        };
        assert_eq!(decode::<V1>(&encode("v1", &value).unwrap()).unwrap(), value);
    }

    #[test]
    fn another_version_is_stale_not_misread() {
        let bytes = encode(
            "v1",
            &V1 {
                mean: 1.0,
                samples: 2,
            },
        )
        .unwrap();
        assert_eq!(
            decode::<V2>(&bytes),
            Err(RecordError::Stale {
                stored: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn a_changed_shape_under_the_same_version_is_malformed() {
        let bytes = encode(
            "v1",
            &V1 {
                mean: 1.0,
                samples: 2,
            },
        )
        .unwrap();
        assert!(matches!(
            decode::<ShorterV1>(&bytes),
            Err(RecordError::Malformed(m)) if m.contains("trailing")
        ));
        assert!(matches!(
            decode::<V1>(&bytes[..5]),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(decode::<V1>(&[1]), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn oversized_keys_are_refused() {
        assert!(check_key("agent", &"a".repeat(MAX_KEY_BYTES)).is_ok());
        let err = check_key("agent", &"a".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("4097 bytes"), "{err}");
    }
}
