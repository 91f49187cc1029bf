//! The Prometheus text exposition format 0.0.4, written by hand: a family's
//! `# HELP` and `# TYPE` lines, then its samples. Pure, so it is tested here.

use std::fmt::Write;

/// The content type a scraper expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Accumulates families; [`Text::finish`] gives the body.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Starts a family. Counters must be named `…_total` (the convention
    /// Prometheus' own clients enforce); a wrong name is a bug here, so it panics
    /// in debug builds.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> Family<'_> {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name:?} must end in _total"
        );
        let kind_s = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind_s}");
        Family {
            out: &mut self.out,
            name: name.to_string(),
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.family(name, help, kind).sample(&[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(&self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes backslash and newline only.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction (counters read better so); the rest as Rust
/// prints them; NaN and the infinities as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_type_and_samples() {
        let mut t = Text::default();
        t.single(
            "kolach_x_total",
            "Things\ncounted \\ here.",
            Kind::Counter,
            3.0,
        );
        t.family("kolach_y", "A gauge.", Kind::Gauge)
            .sample(&[("a", "1"), ("b", "two")], 0.5)
            .sample(&[("a", "2"), ("b", "three")], -1.0);
        assert_eq!(
            t.finish(),
            "# HELP kolach_x_total Things\\ncounted \\\\ here.\n\
             # TYPE kolach_x_total counter\n\
             kolach_x_total 3\n\
             # HELP kolach_y A gauge.\n\
             # TYPE kolach_y gauge\n\
             kolach_y{a=\"1\",b=\"two\"} 0.5\n\
             kolach_y{a=\"2\",b=\"three\"} -1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("l1\nl2"), "l1\\nl2");
        let mut t = Text::default();
        t.family("kolach_z", "z", Kind::Gauge)
            .sample(&[("reason", "say \"hi\"\n")], 1.0);
        assert!(t
            .finish()
            .contains("kolach_z{reason=\"say \\\"hi\\\"\\n\"} 1\n"));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12345678901.0), "12345678901");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    #[cfg(debug_assertions)]
    fn counters_end_in_total() {
        Text::default().single("kolach_packets", "p", Kind::Counter, 1.0);
    }

    #[test]
    fn names() {
        assert!(valid_name("kolach_a:b_1"));
        assert!(!valid_name("1kolach"));
        assert!(!valid_name("kolach-x"));
        assert!(!valid_name(""));
    }
}
