//! File descriptors: the soft limit is raised to the hard one at start, and
//! the listeners' connection caps are fitted below it, so that connections
//! alone can never exhaust the process's descriptors (the store, the
//! exporters' connections and the runtime keep a reserve) and the
//! management API keeps a share of its own for `/healthz`.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything that is not an accepted connection: the
/// store's files, outgoing connections, logs, the runtime's own.
pub const RESERVED_FDS: usize = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit
/// now in force (`None` when unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        return limit.current;
    };
    if limit.current != Some(hard) {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!("cannot raise the file-descriptor limit to the hard limit {hard}: {e}");
            return limit.current;
        }
    }
    Some(hard)
}

/// Fits connection caps below `fd_limit`. `api` is the management API's
/// cap; `others` are the other listeners' caps, each with the number of
/// listeners it applies to (the OTLP receiver's serves gRPC and HTTP). The
/// API keeps up to a quarter of the descriptors; the rest is shared in
/// proportion to the configured caps. Returns whether anything changed.
pub fn fit_caps(
    fd_limit: u64,
    api: Option<&mut usize>,
    others: &mut [(&mut usize, usize)],
) -> bool {
    let available = usize::try_from(fd_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FDS)
        .max(1);
    let mut changed = false;
    let mut rest = available;
    if let Some(api) = api {
        let share = (available / 4).max(1);
        if *api > share {
            *api = share;
            changed = true;
        }
        rest = available.saturating_sub(*api).max(1);
    }
    let wanted: usize = others
        .iter()
        .map(|(cap, listeners)| cap.saturating_mul(*listeners))
        .fold(0, usize::saturating_add);
    if wanted > rest {
        for (cap, _) in others.iter_mut() {
            let fitted = (**cap as u128 * rest as u128 / wanted as u128) as usize;
            **cap = fitted.max(1);
        }
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_below_a_small_limit_and_the_api_keeps_a_share() {
        let (mut api, mut otlp, mut proxy) = (1024, 1024, 1024);
        let changed = fit_caps(256, Some(&mut api), &mut [(&mut otlp, 2), (&mut proxy, 1)]);
        assert!(changed);
        assert_eq!(api, (256 - RESERVED_FDS) / 4);
        assert!(
            api + 2 * otlp + proxy <= 256 - RESERVED_FDS,
            "{api} {otlp} {proxy}"
        );
        assert!(otlp > 0 && proxy > 0);
    }

    #[test]
    fn caps_below_a_large_limit_are_kept() {
        let (mut api, mut otlp) = (1024, 1024);
        assert!(!fit_caps(1 << 20, Some(&mut api), &mut [(&mut otlp, 2)]));
        assert_eq!((api, otlp), (1024, 1024));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_fd_limit();
        assert_eq!(limit, getrlimit(Resource::Nofile).current);
    }
}
