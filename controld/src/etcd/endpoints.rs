//! The etcd endpoints, one client each, used one at a time with failover.
//!
//! etcd-client would balance every call over all endpoints, but its balancer
//! keeps offering a dead member (a failed connection shows up as a "ready"
//! endpoint whose next call fails at once), so after a member dies a third to
//! two thirds of the retries land on it again, and a keepalive can miss a
//! short lease TTL that way. Here every call goes to the current endpoint;
//! when it fails, the next call goes to the next one. Clients connect on first
//! use, so a member that is down at start costs nothing until it is picked.
//!
//! A call that gets no answer in time also drops its endpoint's client, and
//! the next pick connects afresh: etcd-client's channel is a tower balancer,
//! which evicts an endpoint whose connection attempt failed and then waits
//! for it forever, so a client whose first connect failed (a host whose
//! network came up a moment after controld) would never answer again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use std::sync::Mutex;

/// How long connecting one client may take (with auth it talks to etcd).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Endpoints {
    urls: Vec<String>,
    opts: ConnectOptions,
    clients: Vec<Mutex<Option<Client>>>,
    current: AtomicUsize,
}

/// Which endpoint to use after `failed` failed, given the current one: the
/// next, unless another caller already moved on.
pub fn after_failure(current: usize, failed: usize, count: usize) -> usize {
    if count > 1 && current == failed {
        (failed + 1) % count
    } else {
        current
    }
}

impl Endpoints {
    /// `urls` must not be empty.
    pub fn new(urls: Vec<String>, opts: ConnectOptions) -> Self {
        let clients = urls.iter().map(|_| Mutex::new(None)).collect();
        Endpoints {
            urls,
            opts,
            clients,
            current: AtomicUsize::new(0),
        }
    }

    /// Sets the client of endpoint `i` (made up front where connecting
    /// costs nothing).
    pub fn preset(&self, i: usize, client: Client) {
        let mut c = self.lock(i);
        if c.is_none() {
            *c = Some(client);
        }
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Client>> {
        self.clients[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current endpoint's index and client, connecting it if needed.
    /// A failed connect moves on to the next endpoint.
    pub async fn pick(&self) -> Result<(usize, Client), etcd_client::Error> {
        let i = self.current.load(Ordering::Relaxed) % self.urls.len();
        if let Some(c) = self.lock(i).clone() {
            return Ok((i, c));
        }
        let url = self.urls[i].clone();
        let connected = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect([url], Some(self.opts.clone())),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(etcd_client::Error::InvalidArgs(format!(
                "no connection to {} within {}s",
                self.urls[i],
                CONNECT_TIMEOUT.as_secs()
            ))),
        };
        match connected {
            // Two callers may connect at once: the first one kept wins.
            Ok(c) => Ok((i, self.lock(i).get_or_insert(c).clone())),
            Err(e) => {
                self.failed(i);
                Err(e)
            }
        }
    }

    /// A call on endpoint `i` got no answer in time: its client may be
    /// wedged (see the module doc), so the next pick of `i` connects anew.
    /// Streams already open on the old client keep it.
    pub fn reconnect(&self, i: usize) {
        self.lock(i).take();
    }

    /// A call or stream on endpoint `i` failed: use the next one from now on.
    pub fn failed(&self, i: usize) {
        let n = self.urls.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                let next = after_failure(cur % n, i, n);
                (next != cur % n).then_some(next)
            });
    }

    /// The endpoint in use now.
    pub fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_moves_on_once_per_failure() {
        assert_eq!(after_failure(0, 0, 3), 1);
        assert_eq!(after_failure(2, 2, 3), 0);
        // Two callers saw endpoint 0 fail; the second must not skip endpoint 1.
        assert_eq!(after_failure(1, 0, 3), 1);
        assert_eq!(after_failure(0, 0, 1), 0);
    }

    #[test]
    fn failed_rotates_the_current_endpoint() {
        let e = Endpoints::new(
            vec!["http://a:2379".into(), "http://b:2379".into()],
            ConnectOptions::new(),
        );
        assert_eq!(e.current_url(), "http://a:2379");
        e.failed(0);
        assert_eq!(e.current_url(), "http://b:2379");
        e.failed(0);
        assert_eq!(e.current_url(), "http://b:2379");
        e.failed(1);
        assert_eq!(e.current_url(), "http://a:2379");
    }
}
