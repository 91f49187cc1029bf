// The binary only parses flags and calls the library: no unsafe at all.
#![forbid(unsafe_code)]

use clap::Parser;
use kolach_controld::Flags;
use kolach_proto::goflags::Note;
use tracing_subscriber::EnvFilter;

fn main() {
    // flannel's command line and FLANNELD_ variables onto ours, before clap
    // parses; nothing is touched yet when a flag is refused.
    let cl = match kolach_controld::flannel::command_line(std::env::args_os(), &|k| {
        std::env::var(k).ok()
    }) {
        Ok(cl) => cl,
        Err(e) => {
            for line in e.0 {
                eprintln!("kolach-controld: {line}");
            }
            std::process::exit(2);
        }
    };
    let flags = Flags::parse_from(cl.args);
    let level = match flags.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for note in cl.notes {
        match note {
            Note::Info(line) => tracing::info!("{line}"),
            Note::Warn(line) => tracing::warn!("{line}"),
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(anyhow::Error::new(e).context("cannot start the tokio runtime")),
    };
    // The handlers go in before anything else runs, inside the runtime.
    let run = async { kolach_controld::run(flags, kolach_proto::signals::shutdown()).await };
    if let Err(e) = runtime.block_on(run) {
        fail(e);
    }
}

fn fail(e: anyhow::Error) -> ! {
    eprintln!("kolach-controld: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = hint(&e) {
        eprintln!("hint: {hint}");
    }
    std::process::exit(1);
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use kolach_controld::etcd::EtcdError;
    use kolach_controld::underlay::UnderlayError;
    use kolach_proto::uds::UdsError;
    for cause in e.chain() {
        if let Some(u) = cause.downcast_ref::<UnderlayError>() {
            return Some(match u {
                UnderlayError::NoDefaultRoute => "pass --iface NAME (or an address of it)",
                _ => "check --iface; pass --public-ip if peers reach this host at another address",
            });
        }
        if let Some(u) = cause.downcast_ref::<UdsError>() {
            return Some(match u {
                UdsError::InUse { .. } => {
                    "another kolach-controld already runs with this --run-dir"
                }
                _ => "check that --run-dir exists and is writable by this user",
            });
        }
        if let Some(EtcdError::KeyFile(_)) = cause.downcast_ref::<EtcdError>() {
            return Some("a client key must be readable by its owner (and group) only");
        }
        if cause.downcast_ref::<EtcdError>().is_some() {
            return Some(
                "check --etcd-endpoints and the --etcd-cafile/--etcd-certfile/--etcd-keyfile files",
            );
        }
    }
    None
}
