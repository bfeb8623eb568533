//! The words the schema stores in its text columns (statuses, phases, outcomes), as enums that
//! read and write themselves: serde and SQLite both take each value's one spelling, `as_str`.
//!
//! A stored word that no variant spells (a database edited by hand, or written by a newer
//! gemini-sweep) is an error naming the word, never a panic and never a guess: a report that
//! read it as something else could call a dirty run clean.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::RunStatus;

/// A stored word that no variant of `kind` spells.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is no {kind} this gemini-sweep knows (written by a newer version, or edited)")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// Display, serde and SQLite for an enum with `ALL`, `as_str` and `parse`, under the name
/// `kind` that an error about an unknown word gives it.
macro_rules! stored_word {
    ($ty:ty, $kind:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$ty>::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(UnknownValue {
                        kind: $kind,
                        value: text.into_owned(),
                    })
                })
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$ty>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(Box::new(UnknownValue {
                        kind: $kind,
                        value: text.to_owned(),
                    }))
                })
            }
        }
    };
}

/// Defines an enum whose every variant is one stored word, with `ALL`, `as_str` and `parse`.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal {
        $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        stored_word!($name, $kind);
    };
}

stored_word!(RunStatus, "run status");

stored_enum!(
    /// Which step an attempt belongs to, as `attempts.phase` spells it.
    Phase, "phase" {
        /// Listing the group's accounts.
        Discover = "discover",
        /// Listing open orders before the cancel-all.
        Snapshot = "snapshot",
        Cancel = "cancel",
        /// Listing open orders after the cancel-all.
        Verify = "verify",
        /// A listing or a cancel-all while the run holds the group flat (the endpoint says which).
        Hold = "hold",
        /// Reading an account's order history after a cancel-all whose reply was lost.
        Recover = "recover",
    }
);

stored_enum!(
    /// Where one account of a run stands, as `run_accounts.status` spells it.
    AccountStatus, "account status" {
        /// Not finished yet (a resume picks it up).
        Pending = "pending",
        /// Cancel-all succeeded and nothing stayed rejected (flat only once verified).
        Swept = "swept",
        /// Cancel-all succeeded but some orders refused cancellation.
        RejectsLeft = "rejects_left",
        /// Given up on: see [`AccountFailure`].
        Failed = "failed",
        /// Not swept: `enabled=false`, or a listed account the run does not take.
        Skipped = "skipped",
        /// A signal stopped the run before this account finished.
        Interrupted = "interrupted",
        /// The run stopped before any request for this account.
        NotAttempted = "not_attempted",
    }
);

stored_enum!(
    /// Why a failed account failed, as `run_accounts.failure` spells it.
    AccountFailure, "failure" {
        /// The exchange refused this account (unknown, closed, custody): permanent for it.
        AccountRefused = "account_refused",
        /// Transient failures used up `--max-attempts`.
        OutOfAttempts = "out_of_attempts",
        /// This account's request was the one the exchange refused the key on.
        KeyRefused = "key_refused",
        /// The run stopped sending while this account was under way.
        RunHalted = "run_halted",
    }
);

stored_enum!(
    /// What the reconciliation says became of an order, as `order_reconciliation.outcome`
    /// spells it.
    OrderOutcome, "order outcome" {
        /// Open in the verified listing after the sweep.
        StillOpen = "still_open",
        Cancelled = "cancelled",
        /// Cancelled, but not in the listing before: placed during the sweep.
        Late = "late",
        /// Refused cancellation and never cancelled.
        Rejected = "rejected",
        /// Listed before; neither cancelled, rejected nor open in the verified listing after.
        Unexplained = "unexplained",
        /// No listing after the last cancel-all says what became of it: possibly open.
        Unverified = "unverified",
    }
);

impl OrderOutcome {
    /// The outcomes under which an order may still be open.
    pub const OPEN: &[OrderOutcome] = &[Self::StillOpen, Self::Unverified, Self::Rejected];
}

stored_enum!(
    /// Which process worked on a run, as `invocations.kind` spells it.
    InvocationKind, "invocation kind" {
        /// The process that started the run.
        Start = "start",
        /// A `run --resume` that picked it up.
        Resume = "resume",
    }
);

stored_enum!(
    /// How far a discovery run's listing of the group can be trusted, as `runs.listing` spells
    /// it (NULL for a run over an accounts CSV).
    Listing, "listing" {
        Complete = "complete",
        /// The pages could not prove that every account was listed.
        PossiblyIncomplete = "possibly_incomplete",
    }
);

stored_enum!(
    /// How an attempt stands, as `attempts.outcome` spells it. (The writer's
    /// [`super::AttemptOutcome`] also carries a failed reply's reason and message.)
    AttemptState, "attempt outcome" {
        /// Recorded before it left; no reply read yet.
        InFlight = "in_flight",
        Ok = "ok",
        Transient = "transient",
        Permanent = "permanent",
        /// Its process stopped or died before its reply was read.
        Abandoned = "abandoned",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Every word the schema's CHECK constraints allow, by column: each reads back as the
    /// variant that writes it, so a vocabulary added to the schema fails here first.
    #[test]
    fn every_stored_word_has_a_variant_and_reads_back() {
        fn round_trip<T: FromSql + ToSql + PartialEq + fmt::Debug>(all: &[T]) -> Vec<String> {
            let conn = Connection::open_in_memory().unwrap();
            all.iter()
                .map(|v| {
                    let text: String = conn.query_row("SELECT ?1", [v], |r| r.get(0)).unwrap();
                    let back: T = conn.query_row("SELECT ?1", [v], |r| r.get(0)).unwrap();
                    assert_eq!(&back, v);
                    text
                })
                .collect()
        }
        assert_eq!(
            round_trip(RunStatus::ALL),
            [
                "running",
                "completed",
                "incomplete",
                "interrupted",
                "refused",
                "aborted",
                "died"
            ]
        );
        assert_eq!(
            round_trip(AccountStatus::ALL),
            [
                "pending",
                "swept",
                "rejects_left",
                "failed",
                "skipped",
                "interrupted",
                "not_attempted"
            ]
        );
        assert_eq!(
            round_trip(AccountFailure::ALL),
            [
                "account_refused",
                "out_of_attempts",
                "key_refused",
                "run_halted"
            ]
        );
        assert_eq!(
            round_trip(Phase::ALL),
            [
                "discover", "snapshot", "cancel", "verify", "hold", "recover"
            ]
        );
        assert_eq!(round_trip(InvocationKind::ALL), ["start", "resume"]);
        assert_eq!(
            round_trip(Listing::ALL),
            ["complete", "possibly_incomplete"]
        );
        assert_eq!(round_trip(OrderOutcome::ALL).len(), 6);
        assert_eq!(round_trip(AttemptState::ALL).len(), 5);
    }

    #[test]
    fn an_unknown_word_is_an_error_that_names_it() {
        let conn = Connection::open_in_memory().unwrap();
        let err = conn
            .query_row("SELECT 'finished'", [], |r| r.get::<_, RunStatus>(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"finished\" is no run status"), "{err}");
        let err = conn
            .query_row("SELECT 7", [], |r| r.get::<_, AccountStatus>(0))
            .unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::InvalidColumnType(..)),
            "{err}"
        );
        let json: Result<RunStatus, _> = serde_json::from_str("\"finished\"");
        assert!(json.is_err());
        assert_eq!(
            serde_json::to_string(&Listing::PossiblyIncomplete).unwrap(),
            "\"possibly_incomplete\""
        );
    }
}
