//! The per-pod TCP proxy: the pod's network as seen from outside it.
//!
//! The node process listens on the pod's inner address; the proxy listens on the pod IP at every
//! declared container port and forwards each connection to the same port at the inner address.
//! So one switch cuts a pod off from everyone who reaches it at its pod IP — the operator's
//! health checks, clients, and replicas pulling from it — while the process itself keeps
//! running: [`Proxy::cut`] resets every open connection and resets new ones at once until
//! [`Proxy::heal`]. Connections per pod are capped; past the cap new ones are closed.

use crate::{Error, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long the proxy waits to reach the inner address before giving up on a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest [`Proxy::cut`] waits for open connections to close.
pub const CUT_WAIT: Duration = Duration::from_secs(1);

/// A running proxy for one pod; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    cut: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    listening: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listen:port` for every port in `ports` and forwards to `target:port`, with at
    /// most `max_connections` connections open at once over all ports.
    pub async fn start(
        listen: Ipv4Addr,
        target: Ipv4Addr,
        ports: &[u16],
        max_connections: usize,
    ) -> Result<Self> {
        let (cut, _) = watch::channel(false);
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(max_connections));
        let mut proxy = Self {
            cut,
            permits: permits.clone(),
            max_connections,
            listening: Vec::new(),
            tasks: Vec::new(),
        };
        for &port in ports {
            let at = SocketAddr::from((listen, port));
            let listener = TcpListener::bind(at).await.map_err(|source| Error::Io {
                what: format!("proxy listening on {at}"),
                source,
            })?;
            proxy.listening.push(at);
            let to = SocketAddr::from((target, port));
            let task = accept(listener, to, proxy.cut.subscribe(), permits.clone());
            proxy.tasks.push(tokio::spawn(task));
        }
        Ok(proxy)
    }

    /// Drops every open connection and every new one until [`Proxy::heal`]. Returns once the
    /// open connections are closed (or after [`CUT_WAIT`], should one linger).
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let end = tokio::time::Instant::now() + CUT_WAIT;
        while self.permits.available_permits() < self.max_connections
            && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Whether the pod is cut off.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// The addresses the proxy listens on.
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }

    /// Stops the proxy and waits until its listeners and connections are closed, so the
    /// addresses can be bound again at once.
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Closes `stream` with a reset, as a dropped network path would look to the peer as soon as
/// it next sends.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept(
    listener: TcpListener,
    to: SocketAddr,
    cut: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) {
    // Owned here, so aborting this task closes every connection of this port.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(%to, error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if *cut.borrow() {
            reset(client);
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%to, "proxy connection limit reached; closing a new connection");
            reset(client);
            continue;
        };
        let mut cut = cut.clone();
        connections.spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut upstream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await
            else {
                reset(client);
                return;
            };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let outcome = tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
                _ = cut.wait_for(|c| *c) => true,
            };
            if outcome {
                reset(client);
                reset(upstream);
            }
        });
    }
}
