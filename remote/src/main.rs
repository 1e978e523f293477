//! The `remote` binary; everything is in the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    remote::cli::run(remote::cli::Cli::parse())
}
