//! Man pages: clap_mangen renders what clap knows (NAME from `about`,
//! SYNOPSIS, DESCRIPTION from `long_about`, OPTIONS with defaults and
//! `KOLACH_*` variables, SUBCOMMANDS); the binary's manual sections
//! (ENVIRONMENT, FILES, SEE ALSO, ...) follow as real sections, where
//! clap_mangen would put `after_long_help` under one "EXTRA" heading.

use clap_mangen::Man;
use kolach_proto::manual::{Item, Section};
use roff::{bold, roman, Roff};

use crate::binaries;

/// Section 8: daemons and administration tools.
pub const SECTION: &str = "8";

/// One rendered page.
pub struct Page {
    /// `kolachctl-pool-create.8`.
    pub file_name: String,
    pub command: clap::Command,
    pub roff: Vec<u8>,
}

/// A page per binary, and one per kolachctl subcommand (`kolachctl-status.8`,
/// `kolachctl-pool-create.8`, ...), which the SUBCOMMANDS section names.
pub fn pages() -> Vec<Page> {
    let mut out = Vec::new();
    for b in binaries::all() {
        let mut cmd = b.command.disable_help_subcommand(true);
        cmd.build();
        push(&mut out, cmd, b.manual, None);
    }
    out
}

/// `cmd`'s page and its subcommands'; a subcommand's page points back at
/// `parent`'s.
fn push(out: &mut Vec<Page>, cmd: clap::Command, manual: &[Section], parent: Option<&str>) {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        push(out, sub.clone(), &[], Some(&name));
    }
    let roff = render(&cmd, manual, parent);
    out.push(Page {
        file_name: format!("{name}.{SECTION}"),
        command: cmd,
        roff,
    });
}

/// The page: clap_mangen's sections, then `manual`'s (or, for a
/// subcommand, SEE ALSO its `parent`), then VERSION.
pub fn render(cmd: &clap::Command, manual: &[Section], parent: Option<&str>) -> Vec<u8> {
    let version = cmd.get_version().unwrap_or(env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd.clone())
        .title(
            cmd.get_display_name()
                .unwrap_or(cmd.get_name())
                .to_uppercase(),
        )
        .section(SECTION)
        // No date: the page is the same whenever it is built. Written as
        // `""` because roff leaves an empty argument out, which would shift
        // the source and manual into the date's place.
        .date("\"\"")
        .source(format!("kolach {version}"))
        .manual("System Administration");
    let mut w = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut w)?;
        man.render_name_section(&mut w)?;
        man.render_synopsis_section(&mut w)?;
        man.render_description_section(&mut w)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut w)?;
        }
        if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(&mut w)?;
        }
        sections(manual).to_writer(&mut w)?;
        if let Some(parent) = parent {
            let mut see = Roff::new();
            see.control("SH", ["SEE ALSO"]);
            see.text([bold(parent), roman(format!("({SECTION})"))]);
            see.to_writer(&mut w)?;
        }
        if cmd.get_version().is_some() {
            man.render_version_section(&mut w)?;
        }
        Ok(())
    })();
    rendered.expect("writing to a Vec cannot fail");
    w
}

/// The manual sections as roff: a paragraph, or a tagged paragraph whose tag
/// (a file, a variable, a code) is bold.
pub fn sections(manual: &[Section]) -> Roff {
    let mut r = Roff::new();
    for s in manual {
        r.control("SH", [s.title]);
        for item in s.items {
            match item {
                Item::Para(text) => {
                    r.control("PP", []);
                    r.text([roman(*text)]);
                }
                Item::Entry(term, text) => {
                    r.control("TP", []);
                    r.text([bold(*term)]);
                    r.text([roman(*text)]);
                }
            }
        }
    }
    r
}
