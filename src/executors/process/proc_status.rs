//! What the process target needs from `/proc/<pid>/status`: whether the
//! process still runs and which user owns it. Parsing is separate from
//! reading so the ownership rule is tested without another user's process.

/// The parts of `/proc/<pid>/status` the process target reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    /// One-letter state: R, S, D, T (stopped), t, Z (zombie), X, I.
    pub state: char,
    /// The real uid: the user the process belongs to.
    pub real_uid: u32,
}

impl ProcStatus {
    /// True once the process has exited (its parent may not have reaped it).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// True while it is stopped (SIGSTOP, or traced).
    pub fn stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Largest status file read; the real one is about 1.5 KiB.
const MAX_STATUS_BYTES: u64 = 64 * 1024;

/// Reads `/proc/<pid>/status`; `None` when there is no such process.
pub fn read_status(pid: u32) -> Result<Option<ProcStatus>, String> {
    use std::io::Read;
    let path = format!("/proc/{pid}/status");
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {path}: {e}")),
    };
    let mut text = String::new();
    match file.take(MAX_STATUS_BYTES).read_to_string(&mut text) {
        Ok(_) => parse_status(&text).map(Some),
        // The process exited between open and read.
        Err(e) if e.raw_os_error() == Some(3) => Ok(None),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

/// Parses the `State:` and `Uid:` lines of a status file.
pub fn parse_status(text: &str) -> Result<ProcStatus, String> {
    let mut state = None;
    let mut real_uid = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("State:") {
            state = rest.trim_start().chars().next();
        } else if let Some(rest) = line.strip_prefix("Uid:") {
            // Real, effective, saved, filesystem uid.
            real_uid = rest.split_whitespace().next().and_then(|u| u.parse().ok());
        }
    }
    match (state, real_uid) {
        (Some(state), Some(real_uid)) => Ok(ProcStatus { state, real_uid }),
        _ => Err("process status has no State or Uid line".into()),
    }
}

/// The process target acts only on processes of the user agent-immune runs
/// as, even as root: an agent id or a resource attribute must never become
/// a way to stop someone else's process.
pub fn check_owner(pid: u32, status: &ProcStatus, our_uid: u32) -> Result<(), String> {
    if status.real_uid == our_uid {
        Ok(())
    } else {
        Err(format!(
            "refusing to signal pid {pid}: it belongs to uid {}, not to agent-immune's uid {our_uid}",
            status.real_uid
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tT (stopped)\nTgid:\t4242\n\
                          Pid:\t4242\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";

    #[test]
    fn parses_state_and_real_uid() {
        let status = parse_status(STATUS).unwrap();
        assert_eq!(
            status,
            ProcStatus {
                state: 'T',
                real_uid: 1000
            }
        );
        assert!(status.stopped());
        assert!(!status.exited());
        assert!(parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn another_users_process_is_refused() {
        let status = parse_status(STATUS).unwrap();
        let refusal = check_owner(4242, &status, 0).unwrap_err();
        assert_eq!(
            refusal,
            "refusing to signal pid 4242: it belongs to uid 1000, not to agent-immune's uid 0"
        );
        assert!(check_owner(4242, &status, 1000).is_ok());
    }

    #[test]
    fn reads_our_own_status() {
        let status = read_status(std::process::id()).unwrap().unwrap();
        assert_eq!(status.real_uid, rustix::process::getuid().as_raw());
        assert_eq!(read_status(u32::MAX).unwrap(), None);
    }
}
