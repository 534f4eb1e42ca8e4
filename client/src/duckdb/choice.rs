//! Where a query runs when the user leaves it to Sextant (engine "Auto"),
//! resolved before `SubmitQuery`; pure, so it is tested natively.
//!
//! - browser-local files and URL datasets: Local (the server cannot read them);
//! - a server dataset taken offline: Local (instant, works without the network);
//! - any other server dataset: Server (it may be large);
//! - no dataset: Server while it is reachable, Local when offline.

use shared_domain::{DatasetRef, Engine};

/// The engine selector's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    #[default]
    Auto,
    Local,
    Server,
}

impl EngineChoice {
    /// The `<select>` value.
    pub fn value(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Local => "local",
            EngineChoice::Server => "server",
        }
    }

    /// The override that runs on `engine` (re-running a past query).
    pub fn from_engine(engine: Engine) -> Self {
        match engine {
            Engine::Local => EngineChoice::Local,
            Engine::Server => EngineChoice::Server,
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "local" => EngineChoice::Local,
            "server" => EngineChoice::Server,
            _ => EngineChoice::Auto,
        }
    }
}

/// The engine a query runs on.
///
/// `offline_copies` are the server datasets available in the browser;
/// `server_reachable` is the connection indicator's view.
pub fn resolve(
    choice: EngineChoice,
    dataset: Option<&DatasetRef>,
    offline_copies: &[String],
    server_reachable: bool,
) -> Engine {
    match choice {
        EngineChoice::Local => Engine::Local,
        EngineChoice::Server => Engine::Server,
        EngineChoice::Auto => match dataset {
            Some(DatasetRef::Local { .. } | DatasetRef::Url { .. }) => Engine::Local,
            Some(DatasetRef::Server { name }) => {
                if offline_copies.iter().any(|c| c == name.as_str()) {
                    Engine::Local
                } else {
                    Engine::Server
                }
            }
            None if server_reachable => Engine::Server,
            None => Engine::Local,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_domain::{DatasetName, DatasetUrl, LocalFileName};

    fn server(name: &str) -> DatasetRef {
        DatasetRef::Server {
            name: DatasetName::new(name).unwrap(),
        }
    }

    #[test]
    fn auto_runs_browser_data_locally_and_large_server_data_on_the_server() {
        let local = DatasetRef::Local {
            name: LocalFileName::new("trips.csv").unwrap(),
            size_bytes: 10,
        };
        let url = DatasetRef::Url {
            url: DatasetUrl::new("https://example.com/a.csv").unwrap(),
        };
        let offline = vec!["demo".to_owned()];
        let auto = EngineChoice::Auto;
        assert_eq!(resolve(auto, Some(&local), &[], true), Engine::Local);
        assert_eq!(resolve(auto, Some(&url), &[], true), Engine::Local);
        assert_eq!(
            resolve(auto, Some(&server("demo")), &offline, true),
            Engine::Local
        );
        assert_eq!(
            resolve(auto, Some(&server("big")), &offline, true),
            Engine::Server
        );
        assert_eq!(resolve(auto, None, &[], true), Engine::Server);
        assert_eq!(resolve(auto, None, &[], false), Engine::Local);
    }

    #[test]
    fn an_override_wins() {
        let offline = vec!["demo".to_owned()];
        let demo = server("demo");
        assert_eq!(
            resolve(EngineChoice::Server, Some(&demo), &offline, true),
            Engine::Server
        );
        assert_eq!(
            resolve(EngineChoice::Local, Some(&server("big")), &[], true),
            Engine::Local
        );
        for choice in [
            EngineChoice::Auto,
            EngineChoice::Local,
            EngineChoice::Server,
        ] {
            assert_eq!(EngineChoice::parse(choice.value()), choice);
        }
    }
}
