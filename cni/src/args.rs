//! `CNI_ARGS` (`K=V;K=V`): the pod's Kubernetes namespace and name, which pick
//! a pool at controld; every other key (`IgnoreUnknown`, `K8S_POD_UID`, …) is
//! ignored.

use crate::error::{CniError, INVALID_ENV};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
}

/// Parses `CNI_ARGS`. Empty pieces (`a=b;;`) are skipped; a piece without `=`
/// is an error (code 4), as libcni's parser has it.
pub fn parse(raw: &str) -> Result<PodArgs, CniError> {
    let mut out = PodArgs::default();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                INVALID_ENV,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE (pairs are separated by ';')"),
            )
        })?;
        match k {
            "K8S_POD_NAMESPACE" => out.namespace = v.to_string(),
            "K8S_POD_NAME" => out.name = v.to_string(),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_args() {
        let a = parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=nginx-7d9;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2-3",
        )
        .unwrap();
        assert_eq!(
            a,
            PodArgs {
                namespace: "web".into(),
                name: "nginx-7d9".into()
            }
        );
    }

    #[test]
    fn empty_and_partial() {
        assert_eq!(parse("").unwrap(), PodArgs::default());
        assert_eq!(parse(";;").unwrap(), PodArgs::default());
        let a = parse("K8S_POD_NAME=x;").unwrap();
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("", "x"));
        // A value may hold '='.
        assert_eq!(parse("K8S_POD_NAME=a=b").unwrap().name, "a=b");
    }

    #[test]
    fn malformed_pair_names_it() {
        let e = parse("K8S_POD_NAME=x;oops").unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(
            e.msg.contains("CNI_ARGS") && e.msg.contains("\"oops\""),
            "{}",
            e.msg
        );
    }
}
