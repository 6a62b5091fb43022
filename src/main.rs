use std::process::ExitCode;

use clap::Parser;
use tributary::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            cli::exit_code(&error)
        }
    }
}
