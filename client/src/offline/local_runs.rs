//! Which local queries a live tab still runs: the browser side of
//! `shared_domain::sync::orphans`. A tab holds one Web Lock per local query
//! it runs, named after the query; the browser releases it when the tab
//! closes or crashes. A run stored in IndexedDB whose lock nobody holds is
//! an orphan, which the pure rule settles (the engine carries it out).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use shared_domain::QueryId;
use uuid::Uuid;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The lock a tab holds while it runs local query `query_id` (per user:
/// `sender_lock` is the user's outbox lock name).
pub fn lock_name(sender_lock: &str, query_id: QueryId) -> String {
    format!("{sender_lock}-run-{}", query_id.0)
}

/// The query ids of the run locks named in `held` (from [`held_locks`]).
pub fn running(sender_lock: &str, held: &[String]) -> Vec<QueryId> {
    let prefix = format!("{sender_lock}-run-");
    held.iter()
        .filter_map(|name| name.strip_prefix(&prefix))
        .filter_map(|id| Uuid::parse_str(id).ok())
        .map(QueryId)
        .collect()
}

/// A held Web Lock, released when dropped (or when the tab goes away).
pub struct RunLock {
    /// Resolves the promise the lock's callback returned: releases it.
    release: Rc<RefCell<Option<js_sys::Function>>>,
    /// Dropped before the lock was granted: release it as soon as it is.
    dropped: Rc<Cell<bool>>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        match self.release.borrow_mut().take() {
            Some(resolve) => {
                let _ = resolve.call0(&JsValue::NULL);
            }
            None => self.dropped.set(true),
        }
    }
}

/// Asks for the lock `name` and holds it until the returned guard drops.
/// `None` without Web Locks (then no run can be told apart from an orphan,
/// and none is settled).
pub fn hold(name: &str) -> Option<RunLock> {
    let (locks, request) = lock_manager("request")?;
    let release = Rc::new(RefCell::new(None::<js_sys::Function>));
    let dropped = Rc::new(Cell::new(false));
    let granted = {
        let release = release.clone();
        let dropped = dropped.clone();
        Closure::once_into_js(move |_lock: JsValue| -> js_sys::Promise {
            js_sys::Promise::new(&mut |resolve, _| {
                if dropped.get() {
                    let _ = resolve.call0(&JsValue::NULL);
                } else {
                    *release.borrow_mut() = Some(resolve);
                }
            })
        })
    };
    request
        .call2(&locks, &JsValue::from_str(name), &granted)
        .ok()?;
    Some(RunLock { release, dropped })
}

/// The names of every Web Lock held in this browser profile (any tab), or
/// `None` without Web Locks.
pub async fn held_locks() -> Option<Vec<String>> {
    let (locks, query) = lock_manager("query")?;
    let promise = query
        .call0(&locks)
        .ok()?
        .dyn_into::<js_sys::Promise>()
        .ok()?;
    let snapshot = JsFuture::from(promise).await.ok()?;
    let held = js_sys::Reflect::get(&snapshot, &JsValue::from_str("held")).ok()?;
    let held: js_sys::Array = held.dyn_into().ok()?;
    Some(
        held.iter()
            .filter_map(|lock| js_sys::Reflect::get(&lock, &JsValue::from_str("name")).ok())
            .filter_map(|name| name.as_string())
            .collect(),
    )
}

/// `navigator.locks` and one of its methods.
fn lock_manager(method: &str) -> Option<(JsValue, js_sys::Function)> {
    let navigator = web_sys::window()?.navigator();
    let locks = js_sys::Reflect::get(&navigator, &JsValue::from_str("locks")).ok()?;
    if locks.is_undefined() {
        return None;
    }
    let function = js_sys::Reflect::get(&locks, &JsValue::from_str(method))
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    Some((locks, function))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_locks_are_told_apart_from_other_locks_and_other_users() {
        let query = QueryId(Uuid::from_u128(7));
        let held = vec![
            lock_name("sextant-outbox-sender", query),
            "sextant-outbox-sender".to_owned(),
            lock_name("sextant-outbox-sender-user-x", QueryId(Uuid::from_u128(8))),
            "sextant-outbox-sender-run-not-a-uuid".to_owned(),
        ];
        assert_eq!(running("sextant-outbox-sender", &held), vec![query]);
    }
}
