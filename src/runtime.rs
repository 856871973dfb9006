//! The async runtime of a command: built, run to the end of one future, and
//! its outcome turned into the process's exit code.

use std::future::Future;
use std::process::ExitCode;

/// Runs `work` on a multi-threaded runtime; an error is printed as
/// `{command}: {error:#}` and exits 1.
pub fn run_to_exit(command: &str, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
