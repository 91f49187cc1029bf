//! The Debian package under a real systemd (DESIGN §12). The package is
//! built from the binaries under test with `packaging/deb/build` (what `make
//! deb` runs on the release build) and checked with lintian; two bookworm
//! containers boot it on the lab's underlay with etcd there, and each step
//! an operator takes is checked against what systemd and the kernel show:
//! install (user, dirs, CNI link, nothing enabled), `enable --now` (both
//! active, READY only with subnet.env and flannel's written, the masquerade
//! table made by the dataplane under its unit), pods wired by the packaged
//! plugin ping across, and under a 100 pps ping: `reload` (hot upgrade) and
//! `restart` of the dataplane and `restart` of controld lose nothing, a
//! `kill -s KILL` of the dataplane is forwarding again within a second, an
//! `apt install` of a newer version (hot upgrade by the postinst) loses
//! nothing. The units' sandboxing holds in the running processes. `apt
//! remove` stops both and leaves the routes; `apt purge` leaves no file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::nspawn::{self, Machine, MachineSpec};
use kolach_testkit::subnet_env::SubnetEnv;
use kolach_testkit::traffic::steady_ping::{SteadyPing, SteadyResult};
use kolach_testkit::{cni, deb, etcd, lab, netns, run, Lab};

const DP: &str = "kolach-dataplaned.service";
const CD: &str = "kolach-controld.service";
/// Where the packages are inside the containers.
const DEBS: &str = "/mnt/kolach";
/// flannel's subnet.env, written beside kolach's.
const FLANNEL_ENV: &str = "/run/flannel/subnet.env";
/// 100 pings a second.
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// CAP_NET_ADMIN (12) and CAP_BPF (39): all the dataplane keeps.
const DATAPLANE_CAPS: u64 = (1 << 12) | (1 << 39);

#[test]
fn package_installs_runs_upgrades_and_purges_under_systemd() {
    run("deb", packaged);
}

/// A container host and its pod.
struct Node {
    m: Machine,
    /// The pod's namespace (a lab namespace, `/run/netns/pod` inside).
    pod: String,
    pod_ip: Ipv4Addr,
    /// Where its pings write.
    dir: PathBuf,
}

fn packaged(lab: &mut Lab) -> Result<()> {
    let debs = lab.dir.join("debs");
    let first = deb::build(&debs, 1)?;
    let newer = deb::build(&debs, 2)?;
    check_contents(&deb::contents(&first)?)?;
    let lint = deb::lintian(&first)?;
    eprintln!("deb: lintian said:\n{}", lint.output.trim_end());
    ensure!(lint.errors.is_empty(), "lintian errors: {:?}", lint.errors);

    lab.start_etcd()?;
    lab.put_config(lab::NETWORK_CONFIG)?;
    let tree = nspawn::tree()?;
    let mut nodes = Vec::new();
    for i in 1..=2u8 {
        let host_ns = lab.add_outsider(&format!("c{i}"), i)?;
        let pod = lab.add_namespace(&format!("p{i}"))?;
        let spec = MachineSpec {
            name: &host_ns,
            netns: &host_ns,
            tree: &tree,
            bind_ro: vec![(debs.clone(), DEBS.to_string())],
            bind: vec![(netns::netns_path(&pod), "/run/netns/pod".to_string())],
            log: lab.dir.join(format!("console{i}.log")),
        };
        let m = Machine::boot(&spec)?;
        nodes.push(Node {
            m,
            pod,
            pod_ip: Ipv4Addr::UNSPECIFIED,
            dir: lab.dir.clone(),
        });
    }
    let result = exercise(&mut nodes, &first, &newer);
    if result.is_err() {
        for n in &nodes {
            for unit in [DP, CD] {
                eprintln!("--- {} {unit}:\n{}", n.m.name, n.m.journal(unit, 60));
            }
        }
    }
    result
}

fn exercise(nodes: &mut [Node], first: &std::path::Path, newer: &std::path::Path) -> Result<()> {
    let file = |p: &std::path::Path| format!("{DEBS}/{}", p.file_name().unwrap().to_string_lossy());
    for n in nodes.iter() {
        install(&n.m, &file(first))?;
    }
    for n in nodes.iter_mut() {
        start(&n.m)?;
        n.pod_ip = add_pod(n)?;
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let ping = netns::exec_ok(
        &a.pod,
        "ping",
        &["-n", "-c", "3", "-W", "2", &b.pod_ip.to_string()],
    )
    .context("pod to pod across the two containers")?;
    eprintln!(
        "deb: pods ping across: {}",
        ping.lines().rev().nth(1).unwrap_or("").trim()
    );

    let m = &a.m;
    let pid = |unit| -> Result<String> { m.unit_property(unit, "MainPID") };

    let dp = pid(DP)?;
    let r = under_ping(
        a,
        b,
        "systemctl reload kolach-dataplaned (hot upgrade)",
        || m.sh("systemctl reload kolach-dataplaned").map(drop),
    )?;
    ensure!(
        r.lost() == 0,
        "the hot upgrade lost pings: {}",
        r.describe()
    );
    ensure!(
        pid(DP)? == dp,
        "the hot upgrade changed the dataplane's PID"
    );

    let r = under_ping(
        a,
        b,
        "systemctl restart kolach-dataplaned (fd store)",
        || m.sh("systemctl restart kolach-dataplaned").map(drop),
    )?;
    ensure!(r.lost() == 0, "the restart lost pings: {}", r.describe());
    let dp = pid(DP)?;
    ensure!(dp != "0", "no dataplane after the restart");

    let restarts: u32 = m.unit_property(DP, "NRestarts")?.parse()?;
    // --kill-who=main: in this container systemd cannot signal a unit's
    // cgroup as a whole (EIO on the v1 hierarchy nspawn hands it).
    let r = under_ping(a, b, "systemctl kill -s KILL kolach-dataplaned", || {
        m.sh("systemctl kill --kill-who=main -s KILL kolach-dataplaned")
            .map(drop)
    })?;
    let gap = PING_INTERVAL * r.lost();
    ensure!(
        gap < Duration::from_secs(1),
        "forwarding came back only after {gap:?}: {}",
        r.describe()
    );
    ensure!(
        pid(DP)? != dp,
        "the dataplane was not restarted after SIGKILL"
    );
    let now: u32 = m.unit_property(DP, "NRestarts")?.parse()?;
    ensure!(
        now == restarts + 1,
        "NRestarts {restarts} -> {now} after one SIGKILL"
    );

    let cd = pid(CD)?;
    let r = under_ping(a, b, "systemctl restart kolach-controld", || {
        m.sh("systemctl restart kolach-controld").map(drop)
    })?;
    ensure!(
        r.lost() == 0,
        "the controld restart lost pings: {}",
        r.describe()
    );
    ensure!(pid(CD)? != cd, "controld was not restarted");

    sandboxing(m)?;

    let dp = pid(DP)?;
    let r = under_ping(a, b, "apt install of a newer version", || {
        m.sh(&format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q {}",
            file(newer)
        ))
        .map(drop)
    })?;
    ensure!(
        r.lost() == 0,
        "the package upgrade lost pings: {}",
        r.describe()
    );
    ensure!(
        pid(DP)? == dp,
        "the package upgrade restarted the dataplane instead of a hot upgrade"
    );
    let version = m.sh("dpkg-query -W -f '${Version}' kolach")?;
    ensure!(
        version.ends_with("-2"),
        "after the upgrade dpkg says version {version}"
    );
    ensure!(
        m.unit_property(CD, "ActiveState")? == "active",
        "controld not active after the upgrade"
    );

    remove_and_purge(m)
}

/// The files the package must hold.
fn check_contents(listing: &str) -> Result<()> {
    eprintln!("deb: dpkg -c:\n{}", listing.trim_end());
    for path in [
        "./usr/bin/kolach-controld",
        "./usr/bin/kolach-dataplaned",
        "./usr/bin/kolachctl",
        "./usr/lib/cni/kolach",
        "./lib/systemd/system/kolach-controld.service",
        "./lib/systemd/system/kolach-dataplaned.service",
        "./usr/lib/sysusers.d/kolach.conf",
        "./usr/lib/tmpfiles.d/kolach.conf",
        "./etc/default/kolach",
        "./usr/share/man/man8/kolach-controld.8.gz",
        "./usr/share/man/man8/kolach-dataplaned.8.gz",
        "./usr/share/man/man8/kolachctl.8.gz",
        "./usr/share/man/man8/kolach.8.gz",
        "./usr/share/bash-completion/completions/kolachctl",
        "./usr/share/zsh/vendor-completions/_kolachctl",
        "./usr/share/fish/vendor_completions.d/kolachctl.fish",
        "./usr/share/doc/kolach/copyright",
    ] {
        ensure!(
            listing
                .lines()
                .any(|l| l.split_whitespace().nth(5) == Some(path)),
            "the package lacks {path}"
        );
    }
    Ok(())
}

/// `apt install ./kolach….deb`: the user and dirs exist, the CNI plugin is
/// linked, nothing is enabled or running.
fn install(m: &Machine, deb: &str) -> Result<()> {
    m.sh(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q {deb}"
    ))?;
    let facts = m.sh("getent passwd kolach | cut -d: -f1,6,7; \
         stat -c '%n %a %U %G' /run/kolach /var/lib/kolach; \
         readlink /opt/cni/bin/kolach; \
         systemctl is-enabled kolach-dataplaned kolach-controld || true; \
         systemctl is-active kolach-dataplaned kolach-controld || true")?;
    let want = "kolach:/nonexistent:/usr/sbin/nologin\n\
                /run/kolach 1770 root kolach\n\
                /var/lib/kolach 750 kolach kolach\n\
                /usr/lib/cni/kolach\n\
                disabled\ndisabled\ninactive\ninactive\n";
    ensure!(
        facts == want,
        "{}: after install:\n{facts}wanted:\n{want}",
        m.name
    );
    Ok(())
}

/// Points controld at the lab's etcd and runs `systemctl enable --now`:
/// with Type=notify it returns once both sent READY=1, and controld's
/// READY means subnet.env is written.
fn start(m: &Machine) -> Result<()> {
    // flannel's subnet.env too, where the unit lets controld write it, and
    // masquerading by the dataplane's nft under its unit.
    m.sh(&format!(
        "printf 'KOLACH_ETCD_ENDPOINTS={}\\nKOLACH_IFACE=eth0\\nKOLACH_FLANNEL_SUBNET_FILE={FLANNEL_ENV}\\nKOLACH_IP_MASQ=true\\n' \
         >> /etc/default/kolach",
        etcd::endpoint()
    ))?;
    let t = Instant::now();
    m.sh("systemctl enable --now kolach-dataplaned kolach-controld")?;
    let took = t.elapsed();
    for unit in [DP, CD] {
        let state = m.sh(&format!(
            "systemctl show -p Type -p ActiveState -p SubState --value {unit} | paste -sd ' '"
        ))?;
        ensure!(
            state.trim() == "notify active running",
            "{}: {unit} is {state}",
            m.name
        );
    }
    let env = SubnetEnv::parse(&m.sh("cat /run/kolach/subnet.env")?)?;
    let flannel = m.sh(&format!("cat {FLANNEL_ENV}"))?;
    let want = format!(
        "FLANNEL_SUBNET={}/{}",
        env.gateway(),
        env.lease().prefix_len()
    );
    ensure!(
        flannel.lines().any(|l| l == want),
        "{}: {FLANNEL_ENV} lacks {want}:\n{flannel}",
        m.name
    );
    ensure!(
        flannel.lines().any(|l| l == "FLANNEL_IPMASQ=true"),
        "{}: {FLANNEL_ENV} does not say FLANNEL_IPMASQ=true:\n{flannel}",
        m.name
    );
    let masq = m.sh("nft list table ip kolach")?;
    ensure!(
        masq.contains("masquerade"),
        "{}: no masquerade rule in table ip kolach:\n{masq}",
        m.name
    );
    let status = m.sh("kolachctl status")?;
    ensure!(
        status.contains(&env.lease().to_string()),
        "{}: kolachctl status does not name the lease {}:\n{status}",
        m.name,
        env.lease()
    );
    // Under its unit the dataplane has what it asks for: no warning such as
    // a missing CAP_BPF or an unwritable sysctl.
    let warned =
        m.sh("journalctl --no-pager -o cat -u kolach-dataplaned | grep ' WARN ' || true")?;
    ensure!(
        warned.is_empty(),
        "{}: the dataplane warned under its unit:\n{warned}",
        m.name
    );
    eprintln!(
        "deb: {}: enable --now took {took:.1?}; both active; subnet.env holds {}",
        m.name,
        env.lease()
    );
    Ok(())
}

/// A pod wired by the packaged plugin, through the /opt/cni/bin link.
fn add_pod(n: &Node) -> Result<Ipv4Addr> {
    let config = r#"{"cniVersion":"1.0.0","name":"kolach","type":"kolach"}"#;
    let out = n.m.sh_input(
        &format!(
            "CNI_COMMAND=ADD CNI_CONTAINERID=deb-{} CNI_NETNS=/run/netns/pod CNI_IFNAME=eth0 \
             CNI_PATH=/opt/cni/bin /opt/cni/bin/kolach",
            n.m.name
        ),
        config,
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("CNI result {out}"))?;
    cni::result_ip(&v).with_context(|| format!("no address in the CNI result {out}"))
}

/// Runs `action` one second into a 100 pps ping from `a`'s pod to `b`'s
/// that lasts 4 s, and reports the ping.
fn under_ping(
    a: &Node,
    b: &Node,
    what: &str,
    action: impl FnOnce() -> Result<()>,
) -> Result<SteadyResult> {
    let out = a.dir.join("ping.log");
    let ping = SteadyPing::start(&a.pod, b.pod_ip, PING_INTERVAL, 400, &out)?;
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    action().with_context(|| what.to_string())?;
    let took = t.elapsed();
    let r = ping.finish(Duration::from_secs(5))?;
    eprintln!("deb: {what} (took {took:.1?}) under ping: {}", r.describe());
    Ok(r)
}

/// The running daemons hold what their units allow: controld no capability
/// at all, as user kolach; the dataplane only CAP_NET_ADMIN and CAP_BPF;
/// both no_new_privs and a seccomp filter.
fn sandboxing(m: &Machine) -> Result<()> {
    let status = |unit| -> Result<String> {
        let pid = m.unit_property(unit, "MainPID")?;
        m.sh(&format!("cat /proc/{pid}/status"))
    };
    let field = |text: &str, key: &str| -> Result<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no {key} in /proc/PID/status"))
    };
    let caps =
        |text: &str, key: &str| -> Result<u64> { Ok(u64::from_str_radix(&field(text, key)?, 16)?) };

    let cd = status(CD)?;
    let uid = m.sh("id -u kolach")?;
    ensure!(
        field(&cd, "Uid")?
            .split_whitespace()
            .all(|u| u == uid.trim()),
        "controld runs as {}, not kolach ({})",
        field(&cd, "Uid")?,
        uid.trim()
    );
    for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        ensure!(
            caps(&cd, key)? == 0,
            "controld {key} = {}",
            field(&cd, key)?
        );
    }
    let dp = status(DP)?;
    for key in ["CapEff", "CapBnd"] {
        ensure!(
            caps(&dp, key)? == DATAPLANE_CAPS,
            "dataplaned {key} = {}, wanted {DATAPLANE_CAPS:016x}",
            field(&dp, key)?
        );
    }
    for (who, text) in [("controld", &cd), ("dataplaned", &dp)] {
        ensure!(
            field(text, "NoNewPrivs")? == "1",
            "{who} may gain privileges"
        );
        ensure!(
            field(text, "Seccomp")? == "2",
            "{who} runs without a seccomp filter"
        );
    }
    eprintln!(
        "deb: sandboxing: controld uid {} with no capability; dataplaned CapEff {}; both NoNewPrivs and seccomp",
        uid.trim(),
        field(&dp, "CapEff")?
    );
    Ok(())
}

/// `apt remove` stops both and leaves the kernel state; `apt purge` then
/// leaves no file of kolach's behind (the system user stays, as Debian
/// leaves users).
fn remove_and_purge(m: &Machine) -> Result<()> {
    let routes_before = m.sh("ip route show table all proto 107")?;
    ensure!(
        !routes_before.trim().is_empty(),
        "no kolach routes before the remove"
    );
    m.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q kolach")?;
    let after = m.sh(
        "systemctl is-active kolach-dataplaned kolach-controld || true; \
         pgrep -l 'kolach-' || true",
    )?;
    ensure!(after == "inactive\ninactive\n", "after apt remove: {after}");
    let routes = m.sh("ip route show table all proto 107")?;
    ensure!(
        routes == routes_before,
        "apt remove changed the routes:\n{routes_before}->\n{routes}"
    );
    ensure!(
        m.sh("ip -br link show kolach0").is_ok(),
        "apt remove took the TUN device"
    );

    m.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q kolach")?;
    let left = m.sh(
        "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /mnt \\) -prune -o \
         \\( -name '*kolach*' -o -user kolach \\) -print",
    )?;
    ensure!(left.trim().is_empty(), "apt purge left:\n{left}");
    let routes = m.sh("ip route show table all proto 107")?;
    ensure!(routes == routes_before, "apt purge changed the routes");
    eprintln!(
        "deb: apt remove stopped both, kept {} kolach routes and kolach0; apt purge left no file",
        routes.lines().count()
    );
    Ok(())
}
