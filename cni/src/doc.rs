//! What the plugin says about itself, written once: the man page kolach(8)
//! (kolach-docgen renders it) and the text `kolach` prints when a person runs
//! it at a terminal without `CNI_COMMAND`. The plugin has no flags, so these
//! are its `--help`.

use kolach_proto::manual::{self, Item, Section};

/// The plugin's version, as its VERSION line and kolach(8) give it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The one-line summary (the man page's NAME).
pub const ABOUT: &str =
    "kolach's CNI plugin: pod addresses from kolach-controld, a veth pair and /32 routes";

/// What it does and how it is run (the man page's DESCRIPTION).
pub const LONG_ABOUT: &str = "kolach is the CNI plugin of the kolach overlay network, installed in a CNI bin dir (/usr/lib/cni/kolach by the Debian package, or /opt/cni/bin/kolach). A container runtime runs it with the CNI_* variables set and the network config as JSON on stdin; it prints its result (ADD) or a CNI error object on stdout:

CNI_COMMAND=ADD CNI_CONTAINERID=... CNI_NETNS=... CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni kolach < net.conf

ADD asks kolach-controld (over <runDir>/controld.sock) for an address, from this host's subnet or from the pool of the pod's namespace, and wires the pod with a veth pair: the pod's end is CNI_IFNAME with the address as /32, a route to 169.254.1.1 on it and a default route via 169.254.1.1; the host end (kol and 11 hex characters) has proxy ARP on and the host routes <address>/32 to it with route protocol 108. ADD turns on IPv4 forwarding when it is off. DEL releases the address and removes the veth; CHECK compares the wiring with what ADD made; GC frees the addresses of attachments the runtime no longer lists; STATUS says whether pods can get addresses now. The plugin keeps no state of its own.

It speaks CNI 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 and answers in the version it was asked in. It must run as root. Run without CNI_COMMAND it prints its version on stderr, and at a terminal this summary too.";

/// The sections beyond the description, for the man page and the terminal.
pub const MANUAL: &[Section] = &[ENVIRONMENT, NETWORK_CONFIG, EXIT_STATUS, FILES, SEE_ALSO];

const ENVIRONMENT: Section = Section {
    title: "ENVIRONMENT",
    items: &[
        Item::Entry(
            "CNI_COMMAND",
            "ADD, DEL, CHECK, GC, STATUS or VERSION (the spec version asked decides which it has).",
        ),
        Item::Entry(
            "CNI_CONTAINERID",
            "The container: a letter or digit, then letters, digits, '_', '.' or '-'. Needed by ADD, CHECK and DEL.",
        ),
        Item::Entry(
            "CNI_NETNS",
            "The path of the pod's network namespace. Needed by ADD and CHECK; DEL goes on without it.",
        ),
        Item::Entry(
            "CNI_IFNAME",
            "The pod's interface name (at most 15 bytes, no '/', ':' or whitespace). Needed by ADD, CHECK and DEL.",
        ),
        Item::Entry("CNI_PATH", "Needed by ADD, CHECK and DEL, as the spec has it."),
        Item::Entry(
            "CNI_ARGS",
            "KEY=VALUE pairs separated by ';'. K8S_POD_NAMESPACE picks the pool (the pool named after the namespace, if there is one) and K8S_POD_NAME is passed on to kolach-controld with it; every other key is ignored.",
        ),
        Item::Entry(
            "KOLACH_CNI_LOG, RUST_LOG",
            "A log filter such as debug: logs go to stderr (stdout is the protocol). Unset: no logs.",
        ),
    ],
};

const NETWORK_CONFIG: Section = Section {
    title: "NETWORK CONFIGURATION",
    items: &[
        Item::Para("The keys the plugin reads from the JSON object on stdin; any other key (capabilities, runtimeConfig, prevResult, ipam, args, ...) is tolerated."),
        Item::Entry("cniVersion", "Required: one of the versions above."),
        Item::Entry(
            "name",
            "Required: the network's name (a letter or digit, then letters, digits, '_', '.' or '-').",
        ),
        Item::Entry(
            "runDir",
            "The absolute directory holding kolach-controld's socket (default /run/kolach).",
        ),
        Item::Entry(
            "pool",
            "The pool for pods whose namespace has none (^[a-z][a-z0-9_.-]*$; default: this host's subnet).",
        ),
        Item::Entry("mtu", "68 to 65535 (default: kolach-controld's, KOLACH_MTU)."),
        Item::Entry(
            "cni.dev/valid-attachments",
            "GC: the [{\"containerID\", \"ifname\"}] still in use (also read as cni.dev/attachments).",
        ),
    ],
};

/// Every code of [`crate::error`]; a test holds the two together.
const EXIT_STATUS: Section = Section {
    title: "EXIT STATUS",
    items: &[
        Item::Para("0 on success; 1 with a CNI error object ({\"cniVersion\", \"code\", \"msg\", \"details\"}) on stdout, whose code is one of:"),
        Item::Entry("1", "Incompatible cniVersion, or a command the version does not have."),
        Item::Entry("2", "Unsupported field in the network config (the spec's; never answered: unknown keys are tolerated)."),
        Item::Entry("3", "Container unknown (the spec's; never answered: DEL of an unknown container succeeds)."),
        Item::Entry("4", "An invalid or missing environment variable, named in msg."),
        Item::Entry("5", "I/O failure (reading stdin)."),
        Item::Entry("6", "The network config is not a JSON object."),
        Item::Entry("7", "Invalid network config (msg names the key)."),
        Item::Entry("11", "Try again later: kolach-controld is not running or not ready, a call timed out, or the connection broke mid-call."),
        Item::Entry("50", "STATUS: pods cannot get addresses now (kolach-controld away or not ready)."),
        Item::Entry("100", "No free address or block in the pool."),
        Item::Entry("101", "kolach-controld refused the request (an unknown pool, an unknown allocation, ...)."),
        Item::Entry("102", "kolach-controld denied permission: the plugin must run as root."),
        Item::Entry("103", "Any other failure of kolach-controld."),
        Item::Entry("110", "The kernel refused to wire (or unwire) the pod: netlink or sysctl."),
        Item::Entry("111", "CHECK: the pod's wiring differs from what ADD made (msg names what)."),
    ],
};

const FILES: Section = Section {
    title: "FILES",
    items: &[
        Item::Entry(
            "/run/kolach/controld.sock",
            "kolach-controld's API (kolach.ipam.v1), the default runDir's.",
        ),
        Item::Entry(
            "/etc/cni/net.d/",
            "Where runtimes look for network configs, e.g. a conflist with {\"type\": \"kolach\"}.",
        ),
    ],
};

const SEE_ALSO: Section = Section {
    title: "SEE ALSO",
    items: &[Item::Para(
        "kolach-controld(8), kolachctl(8), kolach-dataplaned(8)",
    )],
};

/// What `kolach` prints at a terminal after its version line: what it is,
/// how it is run and what it reads; the codes are in the man page.
pub fn usage() -> String {
    format!(
        "{LONG_ABOUT}\n\n{}\nExit status and error codes: man 8 kolach.",
        manual::help_text(&[ENVIRONMENT, NETWORK_CONFIG])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error;
    use crate::version::SUPPORTED;

    #[test]
    fn every_error_code_is_documented_and_no_other() {
        let codes = [
            error::INCOMPATIBLE_VERSION,
            error::UNSUPPORTED_FIELD,
            error::UNKNOWN_CONTAINER,
            error::INVALID_ENV,
            error::IO_FAILURE,
            error::DECODE_FAILURE,
            error::INVALID_CONFIG,
            error::TRY_AGAIN_LATER,
            error::NOT_AVAILABLE,
            error::POOL_EXHAUSTED,
            error::CONTROLD_REFUSED,
            error::PERMISSION_DENIED,
            error::CONTROLD_FAILED,
            error::KERNEL,
            error::CHECK_MISMATCH,
        ];
        let documented: Vec<u32> = EXIT_STATUS
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Entry(term, _) => Some(term.parse().unwrap()),
                Item::Para(_) => None,
            })
            .collect();
        assert_eq!(documented, codes);
    }

    #[test]
    fn versions_and_keys_match_the_code() {
        let versions = SUPPORTED.map(|v| v.as_str()).join(", ");
        let (init, last) = versions.rsplit_once(", ").unwrap();
        assert!(
            LONG_ABOUT.contains(&format!("{init} and {last}")),
            "{versions}"
        );
        assert!(LONG_ABOUT.contains("/usr/lib/cni/kolach"));
        let config = manual::help_text(&[NETWORK_CONFIG]);
        for key in ["cniVersion", "name", "runDir", "pool", "mtu"] {
            assert!(config.contains(&format!("  {key}\n")), "{key}");
        }
        assert!(config.contains(crate::config::DEFAULT_RUN_DIR));
    }

    #[test]
    fn usage_explains_the_environment() {
        let u = usage();
        for var in [
            "CNI_COMMAND",
            "CNI_NETNS",
            "CNI_ARGS",
            "runDir",
            "man 8 kolach",
        ] {
            assert!(u.contains(var), "{var}");
        }
    }
}
