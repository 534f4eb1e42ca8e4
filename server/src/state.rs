//! Shared application state handed to every handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    ready: AtomicBool,
}

impl AppState {
    /// Opens everything the server needs before it can answer.
    pub async fn open(_config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
            }),
        })
    }

    /// Whether start-up work (migrations, projections, demo data) is done.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub(crate) fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }
}
