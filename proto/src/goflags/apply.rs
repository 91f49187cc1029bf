//! One flag, Go style, onto clap's forms: the binary's own (switches, counts,
//! `<BOOL>`s, values) and foreign ones (renames, or handed back).

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use super::words::{find_long, glog_level, go_bool, is_bool_valued};
use super::{Foreign, ForeignFlag, GoFlagError, Source, Spec, Translated};

/// A foreign name: a rename goes on as the flag it names; the rest are
/// handed back in [`Translated::foreign`], `Bool`s as `true`/`false`.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_foreign(
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
            Some(arg) => apply_own(arg, shown, value, rest, out),
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
pub(super) fn apply_own(
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
pub(super) fn push_count(
    arg: &Arg,
    shown: &str,
    v: &str,
    out: &mut Translated,
) -> Result<(), GoFlagError> {
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

pub(super) fn bump(out: &mut Translated, arg: &Arg) {
    if let Some(l) = arg.get_long() {
        *out.given.entry(l.to_owned()).or_default() += 1;
    }
}
