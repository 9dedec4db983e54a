//! A query PostgreSQL plans afresh, with its parameters, every time it runs.
//!
//! Diesel keeps each query as a named prepared statement, and after five executions PostgreSQL
//! may settle on one generic plan for it and keep that plan until the table's statistics change
//! (an `ANALYZE`). A plan made while a table was still nearly empty can then be the wrong one
//! for good: on a fresh database, the conditional `PUT Flag?identifier=…` lookup was planned on
//! the council's `(la_ods, id)` index rather than the unique plan-reference index, so every
//! Flag written read all of its council's Flags (on the bulk benchmark, 666 rows per lookup and
//! a third of the load's time), for as long as the connection lived — forever where autovacuum
//! is off. Queries where two indexes compete like that are wrapped in [`Replanned`]; planning a
//! single-table lookup costs far less than one wrong plan.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// `Q`, sent as an unnamed statement (never cached), so the server plans it at each execution.
#[derive(Debug, Clone, Copy)]
pub struct Replanned<Q>(pub Q);

impl<Q: Query> Query for Replanned<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> QueryId for Replanned<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Replanned<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q, Conn> RunQueryDsl<Conn> for Replanned<Q> {}
