//! `FLANNELD_<FLAG>` (Go's flagutil.SetFlagsFromEnv): a variable for every
//! name, foreign or own, taken only where neither the command line nor the
//! flag's own `KOLACH_` variable says anything.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgAction, Command};

use super::apply::{apply_foreign, apply_own};
use super::words::{find_long, find_short, is_count, nonempty};
use super::{Foreign, GoFlagError, Note, Source, Spec, Translated};

/// The `FLANNELD_<FLAG>` variables, below the command line and `KOLACH_`.
pub(super) fn from_env(
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
        apply_own(arg, &shown, Some(value), &mut Vec::new(), out)?;
        out.notes
            .push(Note::Info(format!("using {var} for --{long}")));
        from_vars.insert(long, var);
    }
    Ok(())
}
