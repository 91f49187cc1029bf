//! Completion scripts, where each shell looks for them once installed:
//! `bash/<bin>`, `zsh/_<bin>`, `fish/<bin>.fish`.

use std::path::PathBuf;

use clap_complete::Shell;

use crate::binaries;

pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// One script: its path under `completions/` and its text.
pub struct Script {
    pub bin: &'static str,
    pub shell: Shell,
    pub path: PathBuf,
    pub text: Vec<u8>,
}

/// The file name `shell` looks up for `bin`.
pub fn file_name(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_string(),
    }
}

/// Every script, for the binaries a person types.
pub fn scripts() -> Vec<Script> {
    let mut out = Vec::new();
    for b in binaries::all().into_iter().filter(|b| b.interactive) {
        for shell in SHELLS {
            let mut text = Vec::new();
            if b.name == "kolachctl" {
                // What `kolachctl completions SHELL` prints, byte for byte.
                kolachctl::cli::completions(shell, &mut text);
            } else {
                let mut cmd = b.command.clone();
                clap_complete::generate(shell, &mut cmd, b.name, &mut text);
            }
            out.push(Script {
                bin: b.name,
                shell,
                path: PathBuf::from(shell.to_string()).join(file_name(shell, b.name)),
                text,
            });
        }
    }
    out
}
