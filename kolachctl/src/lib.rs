//! kolachctl's command line, as a library so that kolach-docgen renders the
//! man pages and completions from the very definitions the binary parses.
//! The binary (`main.rs`) holds the subcommands' work.

#![forbid(unsafe_code)]

pub mod cli;
