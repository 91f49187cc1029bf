//! `kolach-docgen --out DIR`: the man pages and shell completions the
//! Debian package installs, from the binaries' own clap definitions.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "kolach-docgen",
    version,
    about = "Write kolach's man pages (DIR/man/man8) and shell completions (DIR/completions/{bash,zsh,fish})"
)]
struct Args {
    /// Directory to write into; made if missing, files in it overwritten.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match kolach_docgen::generate(&args.out) {
        Ok(written) => {
            for p in written {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kolach-docgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
