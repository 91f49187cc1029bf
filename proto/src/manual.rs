//! The parts of a binary's manual that clap has no place for (ENVIRONMENT,
//! FILES, SIGNALS, EXIT STATUS, SEE ALSO, ...), written once next to the
//! binary's flags. `--help` shows them as plain text below the options
//! ([`help_text`], handed to clap's `after_long_help`); kolach-docgen renders
//! the same sections as man page sections, so the two cannot drift.

/// One manual section: a title in capitals and what it holds, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub title: &'static str,
    pub items: &'static [Item],
}

/// A paragraph, or a term (a file, a variable, a code) and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Para(&'static str),
    Entry(&'static str, &'static str),
}

/// The sections as `--help` shows them: a `TITLE:` line, then paragraphs and
/// terms indented as clap indents options.
pub fn help_text(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&s.title.to_uppercase());
        out.push_str(":\n");
        for item in s.items {
            match item {
                Item::Para(text) => {
                    out.push_str("  ");
                    out.push_str(text);
                    out.push('\n');
                }
                Item::Entry(term, text) => {
                    out.push_str("  ");
                    out.push_str(term);
                    out.push_str("\n          ");
                    out.push_str(text);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_text_shape() {
        const S: &[Section] = &[
            Section {
                title: "FILES",
                items: &[Item::Entry("/run/x.sock", "The API.")],
            },
            Section {
                title: "SEE ALSO",
                items: &[Item::Para("y(8)")],
            },
        ];
        assert_eq!(
            help_text(S),
            "FILES:\n  /run/x.sock\n          The API.\n\nSEE ALSO:\n  y(8)\n"
        );
    }
}
