//! The binaries the package ships, each as a clap `Command` and the manual
//! sections its crate keeps beside its flags.

use clap::CommandFactory;
use kolach_proto::manual::Section;

/// One binary: what `--help` is made of.
pub struct Binary {
    pub name: &'static str,
    pub command: clap::Command,
    pub manual: &'static [Section],
    /// Whether a person types it (completions); the CNI plugin is run by
    /// container runtimes.
    pub interactive: bool,
}

pub fn all() -> Vec<Binary> {
    vec![
        Binary {
            name: "kolach-controld",
            command: kolach_controld::Flags::command(),
            manual: kolach_controld::flags::MANUAL,
            interactive: true,
        },
        Binary {
            name: "kolach-dataplaned",
            command: kolach_dataplaned::Config::command(),
            manual: kolach_dataplaned::config::MANUAL,
            interactive: true,
        },
        Binary {
            name: "kolachctl",
            command: kolachctl::cli::command(),
            manual: kolachctl::cli::MANUAL,
            interactive: true,
        },
        Binary {
            name: "kolach",
            command: cni_plugin(),
            manual: kolach_cni::doc::MANUAL,
            interactive: false,
        },
    ]
}

/// The CNI plugin as a `Command`: no flags (the runtime talks to it through
/// `CNI_*` and stdin), only its description.
pub fn cni_plugin() -> clap::Command {
    use kolach_cni::doc;
    clap::Command::new("kolach")
        .version(doc::VERSION)
        .about(doc::ABOUT)
        .long_about(doc::LONG_ABOUT)
        .disable_help_flag(true)
        .disable_version_flag(true)
}
