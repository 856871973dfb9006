//! Randomness from the OS, for keys and ids.

use super::error::StateError;

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], StateError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| StateError::Random(e.to_string()))?;
    Ok(bytes)
}
