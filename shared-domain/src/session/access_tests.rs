//! The authorization rules of a session, as specifications: given the
//! session's events, when an actor issues a command, then these events or
//! this refusal.

use uuid::Uuid;

use super::*;
use crate::access::{AccessContext, Actor, Member, Role, UserDirectory, UserId, UserName};

use SessionCommand as C;
use SessionEvent as E;

const ANN: UserId = UserId(Uuid::from_u128(0xA));
const BOB: UserId = UserId(Uuid::from_u128(0xB));
const CAROL: UserId = UserId(Uuid::from_u128(0xC));

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

/// The server's directory in these specs: ann, bob and carol.
fn directory(user: &UserName) -> Option<UserId> {
    match user.as_str() {
        "ann" => Some(ANN),
        "bob" => Some(BOB),
        "carol" => Some(CAROL),
        _ => None,
    }
}

fn title(s: &str) -> SessionTitle {
    SessionTitle::new(s).unwrap()
}

fn created_by(owner: UserId) -> SessionEvent {
    E::SessionCreated {
        title: title("Revenue"),
        owner,
    }
}

fn shared(user: UserId, who: &str, role: Role) -> SessionEvent {
    E::SessionShared {
        user,
        name: name(who),
        role,
    }
}

struct Spec {
    state: QuerySession,
}

fn given(events: impl IntoIterator<Item = SessionEvent>) -> Spec {
    let events: Vec<SessionEvent> = events.into_iter().collect();
    Spec {
        state: QuerySession::from_events(&events),
    }
}

impl Spec {
    fn when(
        self,
        actor: UserId,
        command: SessionCommand,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let users: &dyn UserDirectory = &directory;
        let context = AccessContext {
            actor: Actor::User(actor),
            users,
        };
        let before = self.state.clone();
        let outcome = self.state.decide(&context, &command);
        assert_eq!(self.state, before, "decide must not mutate");
        outcome
    }
}

fn rename(t: &str) -> SessionCommand {
    C::RenameSession { title: title(t) }
}

fn share(who: &str, role: Role) -> SessionCommand {
    C::ShareSession {
        user: name(who),
        role,
    }
}

#[test]
fn the_creator_owns_the_session() {
    let events = given([])
        .when(
            ANN,
            C::CreateSession {
                title: title("Revenue"),
            },
        )
        .unwrap();
    assert_eq!(events, vec![created_by(ANN)]);
    let state = QuerySession::from_events(&events);
    assert_eq!(state.role_of(ANN), Some(Role::Owner));
    assert_eq!(state.role_of(BOB), None);
}

#[test]
fn a_stranger_learns_nothing_a_viewer_reads_an_editor_edits() {
    given([created_by(ANN)])
        .when(BOB, rename("mine now"))
        .expect_err_eq(SessionError::NotFound);
    // Creating over someone else's session is refused the same way.
    given([created_by(ANN)])
        .when(BOB, C::CreateSession { title: title("x") })
        .expect_err_eq(SessionError::NotFound);

    let viewer = [created_by(ANN), shared(BOB, "bob", Role::Viewer)];
    assert!(QuerySession::from_events(&viewer).can_read(BOB));
    given(viewer.clone())
        .when(BOB, rename("x"))
        .expect_err_eq(SessionError::Forbidden {
            role: Role::Viewer,
            command: "rename the session",
        });

    let editor = [created_by(ANN), shared(BOB, "bob", Role::Editor)];
    assert_eq!(
        given(editor.clone()).when(BOB, rename("better")).unwrap(),
        vec![E::SessionRenamed {
            title: title("better")
        }]
    );
    let submit = C::SubmitQuery {
        query_id: QueryId(Uuid::from_u128(7)),
        sql: SqlQuery::new("SELECT 1").unwrap(),
        engine: Engine::Local,
    };
    assert!(given(editor.clone()).when(BOB, submit).is_ok());
    for owner_only in [C::CloseSession {}, share("carol", Role::Viewer)] {
        given(editor.clone())
            .when(BOB, owner_only)
            .expect_err_eq_kind(|e| {
                matches!(
                    e,
                    SessionError::Forbidden {
                        role: Role::Editor,
                        ..
                    }
                )
            });
    }
}

#[test]
fn the_owner_shares_changes_roles_and_unshares() {
    let state = given([created_by(ANN)]);
    let events = state.when(ANN, share("bob", Role::Viewer)).unwrap();
    assert_eq!(events, vec![shared(BOB, "bob", Role::Viewer)]);

    let viewer = [created_by(ANN), shared(BOB, "bob", Role::Viewer)];
    // Sharing again changes the role; the same role again changes nothing.
    assert_eq!(
        given(viewer.clone())
            .when(ANN, share("bob", Role::Editor))
            .unwrap(),
        vec![shared(BOB, "bob", Role::Editor)]
    );
    assert_eq!(
        given(viewer.clone())
            .when(ANN, share("bob", Role::Viewer))
            .unwrap(),
        vec![]
    );
    let mut upgraded = viewer.to_vec();
    upgraded.push(shared(BOB, "bob", Role::Editor));
    let state = QuerySession::from_events(&upgraded);
    assert_eq!(
        state.members,
        vec![Member {
            user: BOB,
            name: name("bob"),
            role: Role::Editor
        }]
    );

    let unshared = given(viewer.clone())
        .when(ANN, C::UnshareSession { user: name("bob") })
        .unwrap();
    assert_eq!(
        unshared,
        vec![E::SessionUnshared {
            user: BOB,
            name: name("bob")
        }]
    );
    let mut after = viewer.to_vec();
    after.extend(unshared);
    let state = QuerySession::from_events(&after);
    assert!(!state.can_read(BOB));
    assert!(state.members.is_empty());
}

#[test]
fn sharing_is_refused_for_unknown_users_the_owner_and_the_owner_role() {
    let session = [created_by(ANN)];
    given(session.clone())
        .when(ANN, share("dave", Role::Viewer))
        .expect_err_eq(SessionError::UnknownUser(name("dave")));
    given(session.clone())
        .when(ANN, share("ann", Role::Editor))
        .expect_err_eq(SessionError::SharedWithOwner);
    given(session.clone())
        .when(ANN, share("bob", Role::Owner))
        .expect_err_eq(SessionError::OwnerRoleNotShareable);
    given(session)
        .when(ANN, C::UnshareSession { user: name("bob") })
        .expect_err_eq(SessionError::NotAMember(name("bob")));
}

#[test]
fn admins_get_nothing_and_the_system_actor_is_not_checked() {
    // Being an admin is not a session role: the rules know only members.
    let state = QuerySession::from_events(&[created_by(ANN)]);
    assert!(!state.can_read(UserId::OWNER));
    // The executor (system) reports results on any session.
    assert!(state.decide(&AccessContext::system(), &rename("x")).is_ok());
}

#[test]
fn sessions_from_before_accounts_belong_to_owner() {
    let payload = serde_json::json!({"type": "SessionCreated", "title": "old"});
    let event: SessionEvent = SessionEvent::upcaster()
        .decode("SessionCreated", 1, payload)
        .unwrap();
    let state = QuerySession::from_events(&[event]);
    assert_eq!(state.owner, Some(UserId::OWNER));
    assert_eq!(state.role_of(UserId::OWNER), Some(Role::Owner));
}

#[test]
fn an_unknown_envelope_actor_field_is_never_believed() {
    // The command schema has no actor: a forged one does not even parse
    // into a command with an actor (unknown fields are refused).
    let forged = serde_json::json!({"type": "RenameSession", "title": "x", "actor": "ann"});
    assert!(serde_json::from_value::<SessionCommand>(forged).is_err());
}

trait ExpectErr {
    fn expect_err_eq(self, expected: SessionError);
    fn expect_err_eq_kind(self, check: impl Fn(&SessionError) -> bool);
}

impl ExpectErr for Result<Vec<SessionEvent>, SessionError> {
    #[track_caller]
    fn expect_err_eq(self, expected: SessionError) {
        match self {
            Ok(events) => panic!("expected {expected:?}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }

    #[track_caller]
    fn expect_err_eq_kind(self, check: impl Fn(&SessionError) -> bool) {
        match self {
            Ok(events) => panic!("expected a refusal, got events {events:?}"),
            Err(error) => assert!(check(&error), "unexpected refusal {error:?}"),
        }
    }
}

#[test]
fn size_limits_apply_when_deciding_never_when_reading_stored_events() {
    let long = "x".repeat(SessionTitle::MAX_CHARS + 50);
    // A stored event from a time with another limit still reads.
    let stored: SessionEvent =
        serde_json::from_value(serde_json::json!({"type": "SessionRenamed", "title": long}))
            .unwrap();
    let mut state = QuerySession::from_events(&[created_by(ANN)]);
    state.apply(&stored);
    assert_eq!(state.title.as_ref().unwrap().as_str(), long);
    // A command carrying it is refused by the decision.
    let command: SessionCommand =
        serde_json::from_value(serde_json::json!({"type": "RenameSession", "title": long}))
            .unwrap();
    given([created_by(ANN)])
        .when(ANN, command)
        .expect_err_eq(SessionError::Invalid(
            crate::values::ValueError::TitleTooLong(SessionTitle::MAX_CHARS + 50),
        ));
    let sql = "-".repeat(SqlQuery::MAX_BYTES + 1);
    let submit: SessionCommand = serde_json::from_value(serde_json::json!(
        {"type": "SubmitQuery", "query_id": Uuid::from_u128(3), "sql": sql, "engine": "local"}
    ))
    .unwrap();
    given([created_by(ANN)])
        .when(ANN, submit)
        .expect_err_eq(SessionError::Invalid(
            crate::values::ValueError::SqlTooLong(SqlQuery::MAX_BYTES + 1),
        ));
}

#[test]
fn allows_answers_what_the_controls_may_offer_each_role() {
    let session = given([
        created_by(ANN),
        shared(BOB, "bob", Role::Viewer),
        shared(CAROL, "carol", Role::Editor),
    ])
    .state;
    let close = C::CloseSession {};
    // Given ann owns, bob views and carol edits: then the rename control is
    // for ann and carol, the close control for ann alone, nothing for others.
    assert!(session.allows(ANN, &rename("x")));
    assert!(session.allows(ANN, &close));
    assert!(!session.allows(BOB, &rename("x")));
    assert!(session.allows(CAROL, &rename("x")));
    assert!(!session.allows(CAROL, &close));
    assert!(!session.allows(UserId(Uuid::from_u128(0xD)), &rename("x")));
    assert!(!QuerySession::default().allows(ANN, &rename("x")));
}

#[test]
fn names_roles_and_ids_show_their_text() {
    assert_eq!(ANN.to_string(), Uuid::from_u128(0xA).to_string());
    assert_eq!(String::from(name("bob")), "bob");
    assert_eq!(name("bob").to_string(), "bob");
    assert_eq!(Role::Viewer.to_string(), "viewer");
    assert_eq!(Role::Editor.to_string(), "editor");
    assert_eq!(Role::Owner.to_string(), "owner");
    let debug = format!("{:?}", AccessContext::user(BOB));
    assert!(
        debug.contains("AccessContext") && debug.contains("User"),
        "{debug}"
    );
}

#[test]
fn share_events_name_the_member_they_change_and_others_name_none() {
    assert_eq!(shared(BOB, "bob", Role::Viewer).member_changed(), Some(BOB));
    let unshared = E::SessionUnshared {
        user: CAROL,
        name: name("carol"),
    };
    assert_eq!(unshared.member_changed(), Some(CAROL));
    assert_eq!(created_by(ANN).member_changed(), None);
}
