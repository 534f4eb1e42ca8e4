//! Given / when / then for aggregates, without storage.
//!
//! ```
//! use shared_domain::testing::given;
//! use shared_domain::{QuerySession, SessionCommand, SessionError, SessionTitle};
//!
//! given::<QuerySession>([])
//!     .when(SessionCommand::RenameSession { title: SessionTitle::new("x").unwrap() })
//!     .then_expect_error(SessionError::NotCreated);
//! ```

use crate::aggregate::Aggregate;

/// Starts a specification: the aggregate as rebuilt from `events`.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: A::from_events(&events),
    }
}

/// The state a specification starts from.
pub struct Given<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// The command under test.
    pub fn when(self, command: A::Command) -> When<A> {
        let before = self.state.clone();
        let outcome = self.state.handle(&command);
        assert_eq!(
            format!("{:?}", self.state),
            format!("{before:?}"),
            "handle must not mutate the aggregate"
        );
        When {
            state: self.state,
            command,
            outcome,
        }
    }
}

/// The outcome of one command, to be checked.
pub struct When<A: Aggregate> {
    state: A,
    command: A::Command,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A> {
    /// Asserts that the command produced exactly `expected`, and returns the
    /// state after applying them for further checks.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "events produced by {:?}", self.command);
                let mut state = self.state;
                let before = state.version();
                for event in &events {
                    state.apply(event);
                }
                assert_eq!(state.version(), before + events.len() as u64);
                state
            }
            Err(error) => panic!(
                "expected events {expected:?} from {:?}, got error {error:?}",
                self.command
            ),
        }
    }

    /// Asserts that the command was refused with `expected`.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error) {
        match self.outcome {
            Ok(events) => panic!(
                "expected error {expected:?} from {:?}, got events {events:?}",
                self.command
            ),
            Err(error) => assert_eq!(error, expected),
        }
    }
}
