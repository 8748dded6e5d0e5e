//! What the examples share: how they end when something fails.

use std::process::ExitCode;

/// `n` and `noun`, the noun in the plural unless `n` is 1: `1 word`, `3 words`.
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// The exit status of an example whose work ended as `result`: on failure it says
/// `error: ` and the error with its causes on stderr, and gives 1. (A `main` that returns
/// the error itself prints its Debug form, `Nats { operation: ... }`, which tells a person
/// nothing.)
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", osp_client::explain(&*error));
            ExitCode::FAILURE
        }
    }
}
