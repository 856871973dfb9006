//! Which headers cross the proxy. End-to-end headers pass intact;
//! hop-by-hop ones (RFC 9110 §7.6.1: Connection, Keep-Alive, Proxy-*, TE,
//! Trailer, Transfer-Encoding, Upgrade, and any named in Connection) stop
//! here, as do the proxy's own routing header, what the HTTP client sets
//! itself (Host, Content-Length), and `Expect` (the proxy already holds the
//! whole body; `100-continue` was answered on the client's connection).

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Picks a provider from the allowlist; never forwarded.
pub const PROVIDER_HEADER: &str = "x-llm-provider";

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

fn is_hop_by_hop(name: &HeaderName, named_in_connection: &[String]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name)
        || name.starts_with("proxy-")
        || named_in_connection.iter().any(|n| n == name)
}

/// Header names listed in `Connection` (lowercased).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The headers to send upstream.
pub fn upstream_request_headers(incoming: &HeaderMap) -> HeaderMap {
    let named = connection_tokens(incoming);
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if is_hop_by_hop(name, &named)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name.as_str() == PROVIDER_HEADER
        {
            continue;
        }
        if name == header::ACCEPT_ENCODING {
            if let Some(value) = readable_encodings(value) {
                out.append(name.clone(), value);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The headers to send back to the client.
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let named = connection_tokens(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if !is_hop_by_hop(name, &named) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `Accept-Encoding` narrowed to what the proxy can read for vitals (gzip,
/// deflate, identity): the response stays compressed end to end, but in an
/// encoding whose usage numbers the proxy can still see. `None` when nothing
/// is left (the upstream then answers uncompressed).
fn readable_encodings(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let kept: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|item| {
            let coding = item.split(';').next().unwrap_or("").trim();
            ["gzip", "x-gzip", "deflate", "identity"]
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_hop_by_hop_and_own_headers_are_removed() {
        let incoming = map(&[
            ("host", "proxy:4000"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("expect", "100-continue"),
            ("x-llm-provider", "azure"),
            ("authorization", "Bearer sk-x"),
            ("openai-organization", "org-1"),
            ("x-stainless-retry-count", "0"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
        ]);
        let out = upstream_request_headers(&incoming);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "authorization",
                "openai-organization",
                "x-stainless-retry-count",
                "accept-encoding"
            ]
        );
        assert_eq!(out["accept-encoding"], "gzip, deflate");
        assert_eq!(out["authorization"], "Bearer sk-x");
    }

    #[test]
    fn unreadable_accept_encoding_is_dropped() {
        let out = upstream_request_headers(&map(&[("accept-encoding", "br")]));
        assert!(out.get("accept-encoding").is_none());
    }

    #[test]
    fn response_headers_keep_end_to_end_ones() {
        let upstream = map(&[
            ("content-type", "text/event-stream"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("x-request-id", "req_1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("openai-processing-ms", "12"),
        ]);
        let out = client_response_headers(&upstream);
        assert!(out.get("transfer-encoding").is_none() && out.get("connection").is_none());
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
        assert_eq!(out["x-request-id"], "req_1");
        assert_eq!(out.len(), 5);
    }
}
