//! The events the aggregate decided, in order: the session's source of truth.

use leptos::prelude::*;

use crate::state::Store;

#[component]
pub fn EventLog() -> impl IntoView {
    let store = expect_context::<Store>();
    let rows = move || store.with_session(|w| w.log.clone()).unwrap_or_default();

    view! {
        <section class="card events">
            <h2>"Event log"</h2>
            <table class="event-log" data-testid="event-log">
                <thead>
                    <tr>
                        <th>"#"</th>
                        <th>"Event"</th>
                        <th>"Payload"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        rows()
                            .into_iter()
                            .map(|logged| {
                                let payload = serde_json::to_string(&logged.event)
                                    .unwrap_or_else(|e| format!("<{e}>"));
                                view! {
                                    <tr data-testid="event-row" data-event-type=logged.event_type()>
                                        <td class="mono">{logged.sequence}</td>
                                        <td>{logged.event_type()}</td>
                                        <td class="mono payload">{payload}</td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
        </section>
    }
}
