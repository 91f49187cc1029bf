//! The Prometheus text exposition format 0.0.4, written by hand: a family's
//! `# HELP` and `# TYPE` lines, then its samples. Pure, so it is tested here.

use std::fmt::Write;

/// The content type a scraper expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Written with [`Text::histogram`], not [`Text::family`].
    Histogram,
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
            Kind::Histogram => "histogram",
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

    /// A histogram without labels: `name_bucket{le="…"}` for each of `h`'s
    /// buckets and `le="+Inf"` (the count), then `name_sum` and `name_count`.
    /// The name carries the unit (`…_seconds`), never `_total`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        debug_assert!(
            !name.ends_with("_total"),
            "histogram {name:?} ends in _total"
        );
        self.family(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        for &(le, n) in h.buckets() {
            let _ = writeln!(self.out, "{bucket}{{le=\"{}\"}} {n}", number(le));
        }
        let _ = writeln!(self.out, "{bucket}{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(self.out, "{name}_sum {}", number(h.sum));
        let _ = writeln!(self.out, "{name}_count {}", h.count);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A histogram as the format wants it, checked: finite upper bounds that
/// rise, cumulative counts that never fall and stay at most `count`, a
/// finite sum. Built from what another process sent, so a bad one is
/// refused rather than written (a scraper would reject the whole body).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// `buckets`: (upper bound, cumulative count), without +Inf.
    pub fn new(buckets: Vec<(f64, u64)>, sum: f64, count: u64) -> Result<Histogram, String> {
        if let Some(&(le, _)) = buckets.iter().find(|(le, _)| !le.is_finite()) {
            return Err(format!("bucket bound {le} is not finite"));
        }
        if let Some(w) = buckets.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!(
                "bucket bounds {} then {} do not rise",
                w[0].0, w[1].0
            ));
        }
        if let Some(w) = buckets.windows(2).find(|w| w[0].1 > w[1].1) {
            return Err(format!(
                "bucket counts fall from {} (le {}) to {} (le {})",
                w[0].1, w[0].0, w[1].1, w[1].0
            ));
        }
        if let Some(&(le, n)) = buckets.last().filter(|(_, n)| *n > count) {
            return Err(format!(
                "bucket le {le} counts {n}, more than the count {count}"
            ));
        }
        if !sum.is_finite() {
            return Err(format!("sum {sum} is not finite"));
        }
        Ok(Histogram {
            buckets,
            sum,
            count,
        })
    }

    pub fn buckets(&self) -> &[(f64, u64)] {
        &self.buckets
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
    fn histogram_buckets_are_cumulative_and_end_with_inf_equal_to_count() {
        let h = Histogram::new(vec![(0.0005, 1), (0.01, 3), (1.0, 3)], 0.75, 4).unwrap();
        let mut t = Text::default();
        t.histogram("kolach_x_seconds", "How long.", &h);
        assert_eq!(
            t.finish(),
            "# HELP kolach_x_seconds How long.\n\
             # TYPE kolach_x_seconds histogram\n\
             kolach_x_seconds_bucket{le=\"0.0005\"} 1\n\
             kolach_x_seconds_bucket{le=\"0.01\"} 3\n\
             kolach_x_seconds_bucket{le=\"1\"} 3\n\
             kolach_x_seconds_bucket{le=\"+Inf\"} 4\n\
             kolach_x_seconds_sum 0.75\n\
             kolach_x_seconds_count 4\n"
        );
    }

    #[test]
    fn an_empty_histogram_is_all_zeros() {
        let h = Histogram::new(vec![(0.5, 0), (1.0, 0)], 0.0, 0).unwrap();
        let mut t = Text::default();
        t.histogram("kolach_y_seconds", "y", &h);
        let body = t.finish();
        assert!(body.contains("kolach_y_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(body.contains("kolach_y_seconds_sum 0\nkolach_y_seconds_count 0\n"));
    }

    #[test]
    fn malformed_histograms_are_refused() {
        let bad = [
            (vec![(1.0, 1), (0.5, 1)], 1.0, 1, "do not rise"),
            (vec![(0.5, 1), (0.5, 1)], 1.0, 1, "do not rise"),
            (vec![(0.5, 2), (1.0, 1)], 1.0, 2, "fall"),
            (vec![(0.5, 1), (1.0, 3)], 1.0, 2, "more than the count"),
            (vec![(f64::NAN, 0)], 0.0, 0, "not finite"),
            (vec![(f64::INFINITY, 0)], 0.0, 0, "not finite"),
            (vec![(1.0, 0)], f64::NAN, 0, "sum"),
        ];
        for (buckets, sum, count, why) in bad {
            let e = Histogram::new(buckets.clone(), sum, count).unwrap_err();
            assert!(e.contains(why), "{buckets:?}: {e}");
        }
        // No buckets at all is a histogram of +Inf only.
        assert!(Histogram::new(Vec::new(), 2.0, 3).is_ok());
    }

    #[test]
    fn names() {
        assert!(valid_name("kolach_a:b_1"));
        assert!(!valid_name("1kolach"));
        assert!(!valid_name("kolach-x"));
        assert!(!valid_name(""));
    }
}
