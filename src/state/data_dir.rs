//! Where the state lives, and making sure only its owner can read it.
//!
//! Precedence: `--data-dir`, then `AGENT_IMMUNE_DATA_DIR`, then `[state]
//! data_dir`, then `$XDG_STATE_HOME/agent-immune`, then
//! `~/.local/state/agent-immune`.
//!
//! Permissions: a missing directory is created 0700. An existing one must
//! belong to the current user. If it is open to group or others it is
//! tightened to 0700 (with a warning) only when it is empty or already an
//! agent-immune data dir; any other directory (someone's home, /tmp, a
//! shared folder given by mistake) is refused rather than chmod-ed.

use super::error::StateError;
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DATA_DIR_ENV: &str = "AGENT_IMMUNE_DATA_DIR";
/// File names inside the data dir: anything else makes it "not ours".
pub const STATE_FILE: &str = "state.redb";
pub const LOCK_FILE: &str = "lock";
const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;

/// Where the data dir setting came from (for the startup log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirSource {
    Flag,
    Env,
    Config,
    XdgStateHome,
    Home,
}

/// Everything the resolution looks at, so it can be tested without
/// touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct DataDirInputs {
    /// `--data-dir`.
    pub flag: Option<PathBuf>,
    /// `AGENT_IMMUNE_DATA_DIR`.
    pub env: Option<OsString>,
    /// `[state] data_dir`.
    pub config: Option<String>,
    /// `XDG_STATE_HOME`.
    pub xdg_state_home: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
}

impl DataDirInputs {
    /// The flag and config value given, the rest from the process
    /// environment.
    pub fn from_env(flag: Option<PathBuf>, config: Option<String>) -> Self {
        Self {
            flag,
            env: std::env::var_os(DATA_DIR_ENV),
            config,
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// The data dir to use and where that came from. Empty values count as
/// unset; a relative `XDG_STATE_HOME` is ignored, as the XDG spec says.
pub fn resolve_data_dir(inputs: &DataDirInputs) -> Result<(PathBuf, DataDirSource), StateError> {
    let non_empty = |v: &Option<OsString>| v.clone().filter(|v| !v.is_empty());
    let home = non_empty(&inputs.home).map(PathBuf::from);
    if let Some(flag) = inputs.flag.clone().filter(|p| !p.as_os_str().is_empty()) {
        return Ok((flag, DataDirSource::Flag));
    }
    if let Some(env) = non_empty(&inputs.env) {
        return Ok((PathBuf::from(env), DataDirSource::Env));
    }
    if let Some(config) = inputs.config.as_deref().filter(|c| !c.trim().is_empty()) {
        let path = match config.strip_prefix("~/") {
            Some(rest) => home
                .as_ref()
                .ok_or_else(|| StateError::DataDir {
                    path: PathBuf::from(config),
                    message: "starts with ~/ but HOME is not set".into(),
                })?
                .join(rest),
            None => PathBuf::from(config),
        };
        return Ok((path, DataDirSource::Config));
    }
    if let Some(xdg) = non_empty(&inputs.xdg_state_home).map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok((xdg.join("agent-immune"), DataDirSource::XdgStateHome));
    }
    match home {
        Some(home) => Ok((home.join(".local/state/agent-immune"), DataDirSource::Home)),
        None => Err(StateError::DataDir {
            path: PathBuf::from("~/.local/state/agent-immune"),
            message: format!("no data dir: HOME is not set; give --data-dir or {DATA_DIR_ENV}"),
        }),
    }
}

/// What preparing the directory changed, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    Created,
    /// Group/other permission bits were removed (old mode given).
    Tightened {
        was: u32,
    },
    Unchanged,
}

/// Creates the data dir owner-only, or checks and tightens an existing one
/// (see the module doc for the policy).
pub fn prepare_data_dir(dir: &Path) -> Result<DirChange, StateError> {
    let refuse = |message: String| StateError::DataDir {
        path: dir.to_path_buf(),
        message,
    };
    let metadata = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|source| StateError::Io {
                    what: "cannot create data dir",
                    path: dir.to_path_buf(),
                    source,
                })?;
            // The umask may have masked bits off, never on; set it exactly.
            set_mode(dir, DIR_MODE)?;
            return Ok(DirChange::Created);
        }
        Err(source) => {
            return Err(StateError::Io {
                what: "cannot read data dir",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.is_dir() {
        return Err(refuse("exists and is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(refuse(format!(
            "belongs to uid {}, not to the current user (uid {me}); the state holds secrets and must be the user's own",
            metadata.uid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(DirChange::Unchanged);
    }
    if !looks_like_ours(dir)? {
        return Err(refuse(format!(
            "is open to other users (mode {mode:04o}) and holds files that are not agent-immune's; give a dedicated directory, or `chmod 700` it yourself"
        )));
    }
    set_mode(dir, DIR_MODE)?;
    Ok(DirChange::Tightened { was: mode })
}

/// Empty, or holding nothing but agent-immune's own files.
fn looks_like_ours(dir: &Path) -> Result<bool, StateError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StateError::Io {
        what: "cannot list data dir",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| StateError::Io {
            what: "cannot list data dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name == STATE_FILE || name == LOCK_FILE || name.starts_with("state.redb.")) {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StateError::Io {
            what: "cannot set permissions of",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Sets a file to 0600 if it is more open; returns the old mode if it was.
pub(crate) fn restrict_file(path: &Path) -> Result<Option<u32>, StateError> {
    let metadata = std::fs::metadata(path).map_err(|source| StateError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    set_mode(path, FILE_MODE)?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> DataDirInputs {
        DataDirInputs {
            flag: Some("/flag".into()),
            env: Some("/env".into()),
            config: Some("/config".into()),
            xdg_state_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn precedence_is_flag_env_config_xdg_home() {
        let mut i = inputs();
        let resolve = |i: &DataDirInputs| resolve_data_dir(i).unwrap();
        assert_eq!(resolve(&i), ("/flag".into(), DataDirSource::Flag));
        i.flag = None;
        assert_eq!(resolve(&i), ("/env".into(), DataDirSource::Env));
        i.env = Some("".into());
        assert_eq!(resolve(&i), ("/config".into(), DataDirSource::Config));
        i.config = None;
        assert_eq!(
            resolve(&i),
            ("/xdg/agent-immune".into(), DataDirSource::XdgStateHome)
        );
        i.xdg_state_home = Some("relative/state".into());
        assert_eq!(
            resolve(&i),
            (
                "/home/u/.local/state/agent-immune".into(),
                DataDirSource::Home
            )
        );
        i.home = None;
        let err = resolve_data_dir(&i).unwrap_err().to_string();
        assert!(
            err.contains("HOME is not set") && err.contains(DATA_DIR_ENV),
            "{err}"
        );
    }

    #[test]
    fn config_tilde_is_the_home_directory() {
        let i = DataDirInputs {
            config: Some("~/immune".into()),
            home: Some("/home/u".into()),
            ..DataDirInputs::default()
        };
        assert_eq!(
            resolve_data_dir(&i).unwrap().0,
            PathBuf::from("/home/u/immune")
        );
        let i = DataDirInputs { home: None, ..i };
        assert!(resolve_data_dir(&i).is_err());
    }
}
