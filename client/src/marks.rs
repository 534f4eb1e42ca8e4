//! Performance marks the benchmark reads (`tests/benches/browser.rs`): the
//! time from navigation to a view being usable, as `performance.mark`s.

/// The app is mounted: the first interactive render.
pub const INTERACTIVE: &str = "sextant-interactive";
/// CodeMirror is mounted in the session view (its bundle loaded).
pub const EDITOR_READY: &str = "sextant-editor-ready";

/// Sets mark `name` unless the page already has it (later ones would only
/// measure remounts).
pub fn once(name: &str) {
    let Some(performance) = web_sys::window().and_then(|w| w.performance()) else {
        return;
    };
    if performance.get_entries_by_name(name).length() == 0 {
        let _ = performance.mark(name);
    }
}
