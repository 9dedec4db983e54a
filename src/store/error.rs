//! What can go wrong in the database, classified once (issue: "store errors classified").
//!
//! Every Diesel and pool error becomes one of these kinds where it happens, keeping its source
//! text for the log; the layers above decide what each kind means to their caller (for HTTP:
//! `error::ApiError`'s `From<StoreError>` — 404, 409, 503 or 500).

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A row that had to exist does not.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the row: another request stored the same thing first
    /// (a find-then-insert race on PostgreSQL's several writers, or on several replicas).
    #[error("unique violation: {0}")]
    Duplicate(String),
    /// Worth trying again: a serialisation failure, a lost or unobtainable connection, a busy
    /// or full database, a writer that could not commit.
    #[error("transient: {0}")]
    Transient(String),
    /// A conflict with a concurrent transaction — PostgreSQL chose this one as a deadlock's
    /// victim (40P01) or could not serialise it (40001) — which rolled it back: the same work
    /// run again, in a transaction of its own, succeeds. The writer does that for jobs that
    /// can be run twice ([`crate::store::Store::write_retrying`]).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value cannot be read back as its type (a corrupt or hand-edited column).
    #[error("a stored value cannot be read: {0}")]
    Corrupt(String),
    /// Anything else: a fault of ours (a bad query, a violated foreign key we should have
    /// checked first).
    #[error("database: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether repeating the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_) | StoreError::Conflict(_))
    }
}

/// SQLite reports a locked or full database as an unclassified error; its message says which.
fn sqlite_transient(message: &str) -> bool {
    const TRANSIENT: [&str; 4] = [
        "database is locked",
        "database table is locked",
        "database or disk is full",
        "disk I/O error",
    ];
    TRANSIENT.iter().any(|t| message.contains(t))
}

/// How PostgreSQL says a statement was chosen as a deadlock's victim.
pub const DEADLOCK: &str = "deadlock detected";

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let text = match info.constraint_name().or(info.table_name()) {
                    Some(on) => format!("{} (on {on})", info.message()),
                    None => info.message().to_owned(),
                };
                match kind {
                    DatabaseErrorKind::UniqueViolation => StoreError::Duplicate(text),
                    DatabaseErrorKind::SerializationFailure => StoreError::Conflict(text),
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand
                    | DatabaseErrorKind::ReadOnlyTransaction => StoreError::Transient(text),
                    _ if sqlite_transient(info.message()) => StoreError::Transient(text),
                    // PostgreSQL chose this transaction as a deadlock's victim (40P01): it was
                    // rolled back and would succeed if tried again.
                    _ if info.message().starts_with(DEADLOCK) => StoreError::Conflict(text),
                    _ => StoreError::Other(text),
                }
            }
            DieselError::DeserializationError(why) => StoreError::Corrupt(why.to_string()),
            DieselError::BrokenTransactionManager => StoreError::Transient(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Transient(format!("no database connection: {e}"))
    }
}

use crate::error::ApiError;

/// What each kind of store error means to an HTTP caller (the classification itself is
/// `StoreError`'s). The source text goes to the log with the request id, never to the caller.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError as S;
        match e {
            S::NotFound => ApiError::NotFound("the record was not found".into()),
            S::Duplicate(why) => {
                log::warn!("store: {why}");
                ApiError::Conflict(
                    "another request stored the same record at the same moment; repeat this request to see the record as it now stands"
                        .into(),
                )
            }
            S::Transient(why) => ApiError::Unavailable(format!("database: {why}")),
            S::Conflict(why) => ApiError::Contended(format!("database: {why}")),
            S::Corrupt(why) => ApiError::Internal(format!("corrupt stored value: {why}")),
            S::Other(why) => ApiError::Internal(format!("database: {why}")),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Info(&'static str);
    impl diesel::result::DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db(kind: DatabaseErrorKind, message: &'static str) -> StoreError {
        DieselError::DatabaseError(kind, Box::new(Info(message))).into()
    }

    #[test]
    fn each_kind_of_database_error_is_classified() {
        assert!(matches!(
            db(DatabaseErrorKind::UniqueViolation, "dup"),
            StoreError::Duplicate(_)
        ));
        for kind in [
            DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            assert!(db(kind, "x").is_transient());
        }
        assert!(db(DatabaseErrorKind::Unknown, "database is locked").is_transient());
        assert!(db(DatabaseErrorKind::Unknown, "deadlock detected").is_transient());
        assert!(matches!(
            db(DatabaseErrorKind::Unknown, "deadlock detected"),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            db(
                DatabaseErrorKind::SerializationFailure,
                "could not serialize access"
            ),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            db(DatabaseErrorKind::Unknown, "database or disk is full"),
            StoreError::Transient(_)
        ));
        assert!(db(DatabaseErrorKind::Unknown, "database or disk is full").is_transient());
        assert!(matches!(
            db(DatabaseErrorKind::ForeignKeyViolation, "fk"),
            StoreError::Other(_)
        ));
        assert!(matches!(
            StoreError::from(DieselError::NotFound),
            StoreError::NotFound
        ));
    }
}
