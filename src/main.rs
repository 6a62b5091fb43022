use std::process::ExitCode;

use clap::Parser;
use tributary::cli::{self, Cli};

/// Many small short-lived allocations (JSON records, SQL parameters) on several threads: glibc
/// malloc spent ~20% of a loaded worker's CPU on them (BENCHMARKS.md), mimalloc far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            cli::exit_code(&error)
        }
    }
}
