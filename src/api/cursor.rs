//! The opaque cursor of the paged fleet listing: the last agent id of the
//! page, hex-encoded (an id is at most 128 characters, 512 bytes, so a
//! cursor stays within a query parameter's 1024). A page starts after its
//! cursor in id order, so pages stay stable while agents come and go, and
//! any hex string is a position in that order.

use super::error::ApiError;

pub fn encode(last_id: &str) -> String {
    hex::encode(last_id.as_bytes())
}

/// The position a cursor stands for (ids compare as their UTF-8 bytes),
/// or a refusal naming `cursor`.
pub fn decode(cursor: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(cursor)
        .map_err(|_| ApiError::field("cursor", "must be the next_cursor of a previous page (hex)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_non_hex_is_refused() {
        for id in ["billing", "ünï/code:agent 7"] {
            assert_eq!(decode(&encode(id)).unwrap(), id.as_bytes());
        }
        for bad in ["zz", "0", "abc"] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("cursor"), "{bad}");
        }
    }
}
