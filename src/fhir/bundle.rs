//! Bundles (FHIR R4 §2.36 Bundle): `searchset` with `self`/`next` links, `total` and
//! `search.mode` match/include (§3.1.1.2 paging), and `history`.

use serde_json::{json, Map, Value};

use crate::fhir::object;

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
        let mut links = vec![link(
            "self",
            url(self.base, self.path, &self.query, self.cursor.as_deref()),
        )];
        if let Some(next) = &self.next_cursor {
            links.push(link(
                "next",
                url(self.base, self.path, &self.query, Some(next)),
            ));
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
        let mut b = Map::with_capacity(7);
        b.insert("resourceType".into(), "Bundle".into());
        b.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
        b.insert(
            "meta".into(),
            json!({ "lastUpdated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true) }),
        );
        b.insert("type".into(), "searchset".into());
        if let Some(t) = self.total {
            b.insert("total".into(), t.into());
        }
        b.insert("link".into(), Value::Array(links));
        if !entries.is_empty() {
            b.insert("entry".into(), Value::Array(entries));
        }
        Value::Object(b)
    }
}

fn link(relation: &str, url: String) -> Value {
    object([("relation", relation.into()), ("url", url.into())])
}
