//! Go's words (booleans, glog levels) and what a clap argument is.

use clap::{Arg, ArgAction, Command};

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

pub(super) fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long_and_visible_aliases()
            .is_some_and(|l| l.contains(&name))
    })
}

pub(super) fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short_and_visible_aliases()
            .is_some_and(|s| s.contains(&c))
    })
}

pub(super) fn is_switch(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

pub(super) fn is_count(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Count)
}

/// A flag taking `true` or `false` (`--iptables-forward-rules <BOOL>`).
pub(super) fn is_bool_valued(a: &Arg) -> bool {
    let mut pv: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_owned())
        .collect();
    pv.sort();
    a.get_action().takes_values() && pv == ["false", "true"]
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}
