//! Go-style command lines, so a flannel unit runs unchanged with kolach's
//! binaries. Go's `flag` package takes `-name=value`, `-name value`,
//! `--name=value` alike, and booleans as `-name`, `-name=true|false`; clap
//! takes `--name value` and clusters of one-letter shorts (`-vv`). [`translate`]
//! rewrites the first into the second before clap parses, driven by the
//! binary's own [`clap::Command`] (which flags exist, which are switches,
//! counts or take values), so it cannot drift from the flags.
//!
//! What stays as it was: every `--flag value` / `--flag=value` clap already
//! took, clap's shorts (`-v`, `-vv`, `-h`, `-V`), `--help`. What is new:
//! - `-flag=value`, `-flag value`, `-switch`, `-switch=false` (left out),
//!   `-bool-flag` for a flag taking `<BOOL>` (`=true`); Go's boolean words
//!   (`1 0 t f T F true false TRUE FALSE True False`).
//! - glog's `-v=N`: 0 → nothing, 1–4 → `-v` (debug), 5 and above → `-vv` (trace).
//! - Foreign names the binary lists in its [`Spec`]: other spellings of its
//!   flags ([`Foreign::Rename`]) and flags it handles itself after parsing
//!   ([`Foreign::Value`], [`Foreign::Bool`], returned in
//!   [`Translated::foreign`]). Written with one dash, a foreign name is looked
//!   up before the binary's own (flannel's `-subnet-file` is flannel's file);
//!   with two, after (`--subnet-file` stays kolach's).
//! - With [`Spec::env_prefix`] `FLANNELD`: `FLANNELD_<FLAG>` for every name,
//!   below the command line and below the flag's own `KOLACH_` variable;
//!   each one used or passed over leaves a [`Note`] for the log.
//!
//! Here: the types and the walk over the command line; `apply`: one flag onto
//! clap's forms; `env`: the `FLANNELD_` variables; `words`: Go's booleans,
//! glog's levels and what kind of flag a clap argument is.

mod apply;
mod env;
mod words;

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::Command;

use apply::{apply_foreign, apply_own, push_count};
use words::{find_long, find_short, is_count, is_digits, is_switch, nonempty};
pub use words::{glog_level, go_bool};

/// A name the binary does not have as a flag but accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Another spelling of one of the binary's flags (its long name).
    Rename(&'static str),
    /// A flag taking a value that the binary handles itself.
    Value,
    /// A Go boolean flag the binary handles itself (value `true`/`false`).
    Bool,
}

/// The names a binary accepts beyond its own, and whether it reads an
/// environment prefix of Go's kind (`FLANNELD_<FLAG>`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spec {
    pub foreign: &'static [(&'static str, Foreign)],
    pub env_prefix: Option<&'static str>,
}

/// Where a foreign flag came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    /// The variable's name.
    Env(String),
}

/// A [`Foreign::Value`] or [`Foreign::Bool`] flag as given (`Bool`'s value
/// normalised to `true`/`false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFlag {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

/// A line for the log once logging is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    Warn(String),
}

/// The command line for clap, and what the binary has to handle itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    pub args: Vec<OsString>,
    pub foreign: Vec<ForeignFlag>,
    pub notes: Vec<Note>,
    /// How often each of the binary's own flags (by long name) was given on
    /// the command line or taken from a `FLANNELD_` variable.
    pub given: BTreeMap<String, usize>,
}

impl Translated {
    /// Whether the flag (long name) was set on the command line, by a
    /// `FLANNELD_` variable, or by its own `KOLACH_` variable.
    pub fn sets(&self, cmd: &Command, long: &str, env: &dyn Fn(&str) -> Option<String>) -> bool {
        self.given.contains_key(long)
            || find_long(cmd, long)
                .and_then(|a| a.get_env())
                .and_then(|e| e.to_str())
                .is_some_and(|e| nonempty(env(e)).is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoFlagError {
    #[error("unknown flag {0} (--help lists the flags)")]
    Unknown(String),
    #[error("{flag}: {value:?} is not a boolean (true or false)")]
    NotBool { flag: String, value: String },
    #[error("{flag}: {value:?} is not a log level (0, 1, 2, ...)")]
    NotLevel { flag: String, value: String },
    #[error("{0} needs a value")]
    MissingValue(String),
}

/// Rewrites `args` (the program name first) for clap; `env` reads a variable.
pub fn translate(
    cmd: &Command,
    spec: &Spec,
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Translated, GoFlagError> {
    let mut root = cmd.clone();
    // Built, the command knows its help/version flags and hands global
    // flags down to its subcommands.
    root.build();
    let mut out = Translated::default();
    let mut args = args.into_iter();
    if let Some(name) = args.next() {
        out.args.push(name);
    }
    let mut cur: &Command = &root;
    let mut rest: Vec<OsString> = args.collect();
    rest.reverse(); // popped from the end
    while let Some(raw) = rest.pop() {
        let Some(s) = raw.to_str().map(str::to_owned) else {
            out.args.push(raw);
            continue;
        };
        if s == "--" {
            out.args.push(raw);
            while let Some(r) = rest.pop() {
                out.args.push(r);
            }
            break;
        }
        if !s.starts_with('-') || s == "-" {
            if let Some(sub) = cur.find_subcommand(&s) {
                cur = sub;
            }
            out.args.push(raw);
            continue;
        }
        let double = s.starts_with("--");
        let body = if double { &s[2..] } else { &s[1..] };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let own = find_long(cur, name);
        let foreign = spec
            .foreign
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f);
        // One dash: flannel's meaning first. Two: ours first, and exactly as
        // clap takes it unless clap would have refused it.
        let pick_foreign = foreign.is_some() && (!double || own.is_none());
        if pick_foreign {
            let f = foreign.unwrap_or(Foreign::Value);
            apply_foreign(
                cur,
                spec,
                name,
                f,
                &s,
                value,
                &mut rest,
                &mut out,
                Source::CommandLine,
            )?;
            continue;
        }
        if let Some(arg) = own {
            if double && !is_switch(arg) && !is_count(arg) {
                // Today's form, untouched: its value (if apart) follows as is.
                out.args.push(raw);
                if value.is_none() && arg.get_action().takes_values() {
                    if let Some(v) = rest.pop() {
                        out.args.push(v);
                    }
                }
                apply::bump(&mut out, arg);
                continue;
            }
            apply_own(arg, &s, value, &mut rest, &mut out)?;
            continue;
        }
        if double {
            out.args.push(raw);
            continue;
        }
        // One dash and not a long name: clap's own shorts, or glog's -v.
        let mut chars = name.chars();
        let first = chars.next();
        if let (Some(c), None) = (first, chars.clone().next()) {
            if let Some(arg) = find_short(cur, c).filter(|a| is_count(a)) {
                if let Some(v) = value {
                    push_count(arg, &s, &v, &mut out)?;
                    continue;
                }
                let lone = cur.get_positionals().next().is_none() && !cur.has_subcommands();
                if lone && rest.last().and_then(|n| n.to_str()).is_some_and(is_digits) {
                    let v = rest
                        .pop()
                        .and_then(|v| v.into_string().ok())
                        .unwrap_or_default();
                    push_count(arg, &s, &v, &mut out)?;
                    continue;
                }
            }
        }
        let shorts_ok = value.is_none()
            && name.chars().next().is_some_and(|c| {
                find_short(cur, c).is_some_and(|a| a.get_action().takes_values())
                    || name.chars().all(|c| find_short(cur, c).is_some())
            });
        if shorts_ok {
            out.args.push(raw);
            continue;
        }
        return Err(GoFlagError::Unknown(s));
    }
    if let Some(prefix) = spec.env_prefix {
        env::from_env(&root, spec, prefix, env, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
