//! Bundles (FHIR R4 §2.36 Bundle): one builder for every kind this server answers with
//! (`searchset`, `history`, `batch-response`, `transaction-response`, and the notifications'
//! `history`), and the searchset with `self`/`next` links, `total` and `search.mode`
//! match/include (§3.1.1.2 paging).

use serde_json::{json, Map, Value};

use crate::fhir::object;

/// A Bundle being built: a fresh id and its type first, then what its kind carries. An empty
/// `entry` is left out (FHIR JSON has no empty arrays).
pub struct Bundle(Map<String, Value>);

impl Bundle {
    pub fn new(kind: &str) -> Self {
        let mut b = Map::with_capacity(8);
        b.insert("resourceType".into(), "Bundle".into());
        b.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
        b.insert("type".into(), kind.into());
        Bundle(b)
    }

    pub fn meta(mut self, meta: Value) -> Self {
        self.0.insert("meta".into(), meta);
        self
    }

    /// When the Bundle was assembled (microseconds).
    pub fn timestamp(mut self, at: i64) -> Self {
        self.0
            .insert("timestamp".into(), crate::fhir::instant(at).into());
        self
    }

    pub fn total(mut self, total: usize) -> Self {
        self.0.insert("total".into(), total.into());
        self
    }

    /// The `self` link, and any others as (relation, url).
    pub fn links(mut self, links: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        let links: Vec<Value> = links.into_iter().map(|(r, u)| link(r, u)).collect();
        self.0.insert("link".into(), Value::Array(links));
        self
    }

    pub fn entries(mut self, entries: Vec<Value>) -> Self {
        if !entries.is_empty() {
            self.0.insert("entry".into(), Value::Array(entries));
        }
        self
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// One resource in a searchset.
pub struct Entry {
    pub resource_type: &'static str,
    pub id: String,
    pub resource: Value,
    pub include: bool,
}

pub struct SearchSet<'a> {
    pub base: &'a str,
    /// The searched path, e.g. `Flag`.
    pub path: &'a str,
    /// Query string of the parameters used, without the cursor.
    pub query: String,
    /// The cursor this page was fetched with, if any.
    pub cursor: Option<String>,
    pub next_cursor: Option<String>,
    /// `None` where counting every match is not worth it (the audit team's paged view).
    pub total: Option<usize>,
    pub entries: Vec<Entry>,
}

fn url(base: &str, path: &str, query: &str, cursor: Option<&str>) -> String {
    let mut q = query.to_owned();
    if let Some(c) = cursor {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str("_cursor=");
        q.push_str(&crate::fhir::search::encode(c));
    }
    if q.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{q}")
    }
}

impl SearchSet<'_> {
    /// The Bundle. Built from maps rather than with `json!` around the entries: `json!` copies
    /// every value it is given, and a searchset would copy each resource twice.
    pub fn render(self) -> Value {
        let mut links = vec![(
            "self",
            url(self.base, self.path, &self.query, self.cursor.as_deref()),
        )];
        if let Some(next) = &self.next_cursor {
            links.push(("next", url(self.base, self.path, &self.query, Some(next))));
        }
        let entries: Vec<Value> = self
            .entries
            .into_iter()
            .map(|e| {
                let mode = if e.include { "include" } else { "match" };
                object([
                    (
                        "fullUrl",
                        format!("{}/{}/{}", self.base, e.resource_type, e.id).into(),
                    ),
                    ("resource", e.resource),
                    ("search", json!({ "mode": mode })),
                ])
            })
            .collect();
        let mut b = Bundle::new("searchset").meta(json!({ "lastUpdated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }));
        if let Some(t) = self.total {
            b = b.total(t);
        }
        b.links(links).entries(entries).build()
    }
}

fn link(relation: &str, url: String) -> Value {
    object([("relation", relation.into()), ("url", url.into())])
}
