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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

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
                bump(&mut out, arg);
                continue;
            }
            apply_own(cur, arg, &s, value, &mut rest, &mut out)?;
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
        from_env(&root, spec, prefix, env, &mut out)?;
    }
    Ok(out)
}

/// The `FLANNELD_<FLAG>` variables, below the command line and `KOLACH_`.
fn from_env(
    root: &Command,
    spec: &Spec,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Translated,
) -> Result<(), GoFlagError> {
    let mut names: Vec<(&str, Option<Foreign>)> =
        spec.foreign.iter().map(|(n, f)| (*n, Some(*f))).collect();
    let foreign_names: BTreeSet<&str> = names.iter().map(|(n, _)| *n).collect();
    for a in root.get_arguments() {
        if let Some(l) = a.get_long() {
            let builtin = matches!(a.get_action(), ArgAction::Help | ArgAction::Version);
            if !builtin && !foreign_names.contains(l) {
                names.push((l, None));
            }
        }
    }
    // glog's -v.
    if find_short(root, 'v').is_some_and(is_count) {
        names.push(("v", None));
    }
    let mut from_vars: BTreeMap<String, String> = BTreeMap::new();
    for (name, foreign) in names {
        let var = format!("{prefix}_{}", name.to_uppercase().replace('-', "_"));
        let Some(value) = nonempty(env(&var)) else {
            continue;
        };
        let target = match foreign {
            Some(Foreign::Rename(to)) => find_long(root, to),
            Some(_) => None,
            None if name == "v" => find_short(root, 'v'),
            None => find_long(root, name),
        };
        let Some(arg) = target else {
            // Handled by the binary, unless the command line set it.
            if out
                .foreign
                .iter()
                .any(|f| f.name == name && f.source == Source::CommandLine)
            {
                out.notes.push(Note::Info(format!(
                    "ignoring {var}: -{name} is on the command line"
                )));
            } else {
                let f = foreign.unwrap_or(Foreign::Value);
                let shown = format!("{var}={value}");
                apply_foreign(
                    root,
                    spec,
                    name,
                    f,
                    &shown,
                    Some(value),
                    &mut Vec::new(),
                    out,
                    Source::Env(var),
                )?;
            }
            continue;
        };
        let long = arg.get_long().unwrap_or(name).to_owned();
        if let Some(first) = from_vars.get(&long) {
            out.notes.push(Note::Warn(format!(
                "ignoring {var}: --{long} was already taken from {first}"
            )));
            continue;
        }
        if out.given.contains_key(&long) {
            out.notes.push(Note::Info(format!(
                "ignoring {var}: --{long} is on the command line"
            )));
            continue;
        }
        if let Some(own_var) = arg.get_env().and_then(|e| e.to_str()) {
            if nonempty(env(own_var)).is_some() {
                out.notes.push(Note::Info(format!(
                    "ignoring {var}: {own_var} is set too, and wins"
                )));
                continue;
            }
        }
        let shown = format!("{var}={value}");
        apply_own(root, arg, &shown, Some(value), &mut Vec::new(), out)?;
        out.notes
            .push(Note::Info(format!("using {var} for --{long}")));
        from_vars.insert(long, var);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply_foreign(
    cur: &Command,
    spec: &Spec,
    name: &str,
    f: Foreign,
    shown: &str,
    value: Option<String>,
    rest: &mut Vec<OsString>,
    out: &mut Translated,
    source: Source,
) -> Result<(), GoFlagError> {
    let Some(static_name) = spec.foreign.iter().map(|(n, _)| *n).find(|n| *n == name) else {
        return Err(GoFlagError::Unknown(shown.to_owned()));
    };
    match f {
        Foreign::Rename(to) => match find_long(cur, to) {
            Some(arg) => apply_own(cur, arg, shown, value, rest, out),
            None => Err(GoFlagError::Unknown(shown.to_owned())),
        },
        Foreign::Bool => {
            let v = match value {
                Some(v) => go_bool(&v).ok_or_else(|| GoFlagError::NotBool {
                    flag: shown.to_owned(),
                    value: v,
                })?,
                None => true,
            };
            out.foreign.push(ForeignFlag {
                name: static_name,
                value: v.to_string(),
                source,
            });
            Ok(())
        }
        Foreign::Value => {
            let v = match value {
                Some(v) => v,
                None => rest
                    .pop()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| GoFlagError::MissingValue(shown.to_owned()))?,
            };
            out.foreign.push(ForeignFlag {
                name: static_name,
                value: v,
                source,
            });
            Ok(())
        }
    }
}

/// One of the binary's own flags, Go style.
fn apply_own(
    _cur: &Command,
    arg: &Arg,
    shown: &str,
    value: Option<String>,
    rest: &mut Vec<OsString>,
    out: &mut Translated,
) -> Result<(), GoFlagError> {
    let long = arg.get_long().unwrap_or_default();
    let bool_of = |v: &str| {
        go_bool(v).ok_or_else(|| GoFlagError::NotBool {
            flag: shown.to_owned(),
            value: v.to_owned(),
        })
    };
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let on = match &value {
                Some(v) => bool_of(v)?,
                None => true,
            };
            let want = matches!(arg.get_action(), ArgAction::SetTrue);
            if on == want {
                out.args.push(format!("--{long}").into());
            }
        }
        ArgAction::Count => match value {
            Some(v) => return push_count(arg, shown, &v, out),
            None => out.args.push(format!("--{long}").into()),
        },
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version => {
            out.args.push(format!("--{long}").into());
        }
        _ if is_bool_valued(arg) => {
            let v = match value {
                Some(v) => bool_of(&v)?,
                // Go: a boolean never takes the next word, but a word that
                // can only be the value is taken as it.
                None => match rest.last().and_then(|n| n.to_str()).and_then(go_bool) {
                    Some(b) => {
                        rest.pop();
                        b
                    }
                    None => true,
                },
            };
            out.args.push(format!("--{long}={v}").into());
        }
        _ => match value {
            Some(v) => out.args.push(format!("--{long}={v}").into()),
            // Joined with `=`, so a value that starts with a dash (Go takes
            // `-etcd-prefix -x` as the value "-x") stays a value for clap.
            None => match rest.pop() {
                Some(v) => match v.to_str() {
                    Some(text) => out.args.push(format!("--{long}={text}").into()),
                    None => {
                        out.args.push(format!("--{long}").into());
                        out.args.push(v);
                    }
                },
                None => return Err(GoFlagError::MissingValue(shown.to_owned())),
            },
        },
    }
    bump(out, arg);
    Ok(())
}

/// glog's levels onto a count: 0 → none, 1–4 → one (debug), 5+ → two (trace).
fn push_count(arg: &Arg, shown: &str, v: &str, out: &mut Translated) -> Result<(), GoFlagError> {
    let level: u32 = v.parse().map_err(|_| GoFlagError::NotLevel {
        flag: shown.to_owned(),
        value: v.to_owned(),
    })?;
    let n = glog_level(level);
    let long = arg.get_long().unwrap_or("verbose");
    for _ in 0..n {
        out.args.push(format!("--{long}").into());
    }
    bump(out, arg);
    Ok(())
}

/// How many `-v` a glog level `-v=N` is.
pub fn glog_level(level: u32) -> usize {
    match level {
        0 => 0,
        1..=4 => 1,
        _ => 2,
    }
}

/// Go's `strconv.ParseBool`.
pub fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn bump(out: &mut Translated, arg: &Arg) {
    if let Some(l) = arg.get_long() {
        *out.given.entry(l.to_owned()).or_default() += 1;
    }
}

fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long_and_visible_aliases()
            .is_some_and(|l| l.contains(&name))
    })
}

fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short_and_visible_aliases()
            .is_some_and(|s| s.contains(&c))
    })
}

fn is_switch(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn is_count(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Count)
}

/// A flag taking `true` or `false` (`--iptables-forward-rules <BOOL>`).
fn is_bool_valued(a: &Arg) -> bool {
    let mut pv: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_owned())
        .collect();
    pv.sort();
    a.get_action().takes_values() && pv == ["false", "true"]
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
