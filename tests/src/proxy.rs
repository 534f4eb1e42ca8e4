//! A TCP relay in front of a server, to take one browser offline while the
//! server keeps serving others: [`Relay::go_offline`] closes the listener and
//! every relayed connection (the browser sees connection refused, like a
//! stopped server); [`Relay::go_online`] listens on the same port again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A relay from `127.0.0.1:<port>` to an upstream address.
pub struct Relay {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Starts relaying on an ephemeral port.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Relay {
            addr: listener.local_addr()?,
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        relay.serve(listener);
        // Signed in through the relay as the upstream's owner.
        if let Some(token) = crate::token_for(&format!("http://{upstream}")) {
            crate::register_token(&relay.url(), &token);
        }
        Ok(relay)
    }

    /// `http://127.0.0.1:PORT` of the relay.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(connection);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Refuses new connections and cuts the open ones.
    pub fn go_offline(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn go_online(&self) -> Result<()> {
        // The aborted listener's socket closes asynchronously: retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(last.expect("at least one attempt")).context("re-binding the relay's port")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.go_offline();
    }
}
