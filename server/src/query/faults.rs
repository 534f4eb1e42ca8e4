//! Fault injection for the executor's commands: while a rule is set, the
//! commands it matches are refused as a failing event store refuses them
//! (500), before they reach the pipeline. Off unless a test turns it on
//! (`QueryService::faults`); it proves that no query is left running when
//! the store fails at the worst moment. It can also make the executor's
//! reactor panic, to prove that `/api/health` notices a dead executor.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use shared_domain::SessionCommand;

type Rule = Arc<dyn Fn(&SessionCommand) -> bool + Send + Sync>;

/// The rule in force (none by default) and how many commands it refused.
#[derive(Default)]
pub struct CommandFaults {
    rule: RwLock<Option<Rule>>,
    refused: AtomicU64,
    /// The executor's reactor panics on the next committed events.
    kill_executor: AtomicBool,
}

impl fmt::Debug for CommandFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandFaults")
            .field("active", &self.rule.read().expect("rule").is_some())
            .field("refused", &self.refused())
            .finish()
    }
}

impl CommandFaults {
    /// Refuses every command for which `rule` answers true, until [`CommandFaults::clear`].
    pub fn fail_when(&self, rule: impl Fn(&SessionCommand) -> bool + Send + Sync + 'static) {
        *self.rule.write().expect("rule") = Some(Arc::new(rule));
    }

    /// Lets every command through again.
    pub fn clear(&self) {
        *self.rule.write().expect("rule") = None;
    }

    /// How many commands were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Makes the executor's reactor panic when the next committed events
    /// reach it, which stops the dispatcher (the executor is then dead).
    pub fn kill_executor(&self) {
        self.kill_executor.store(true, Ordering::SeqCst);
    }

    /// Whether the reactor is to die now (once).
    pub(crate) fn executor_dies(&self) -> bool {
        self.kill_executor.swap(false, Ordering::SeqCst)
    }

    /// Whether `command` is to be refused now (and counts it).
    pub(crate) fn fails(&self, command: &SessionCommand) -> bool {
        let rule = self.rule.read().expect("rule").clone();
        let fails = rule.is_some_and(|rule| rule(command));
        if fails {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        fails
    }
}
