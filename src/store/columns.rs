//! Typed columns: what a TEXT column holds, read back as its type. A stored value that does not
//! parse is a `DeserializationError` — classified `StoreError::Corrupt`, logged and answered 500
//! — never a silent default (an AuditEvent without its disclosed entities, a notification
//! without the council's headers).
//!
//! Rows use them through Diesel's `deserialize_as`/`serialize_as`, so both backends share one
//! code path and no backend-specific `FromSql` is needed.

use crate::domain::{FlagStatus, SubscriptionStatus};

/// A stored value that cannot be read as its type.
#[derive(Debug, thiserror::Error)]
#[error("{column} holds {value:?}, which is not {expected}")]
pub struct BadColumn {
    pub column: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn bad(column: &'static str, value: String, expected: &'static str) -> BadColumn {
    let value = value.chars().take(80).collect();
    BadColumn {
        column,
        value,
        expected,
    }
}

impl TryFrom<String> for FlagStatus {
    type Error = BadColumn;
    fn try_from(s: String) -> Result<Self, BadColumn> {
        FlagStatus::parse(&s).ok_or_else(|| bad("flags.status", s, "a Flag status"))
    }
}

impl From<FlagStatus> for String {
    fn from(s: FlagStatus) -> Self {
        s.as_str().to_owned()
    }
}

impl TryFrom<String> for SubscriptionStatus {
    type Error = BadColumn;
    fn try_from(s: String) -> Result<Self, BadColumn> {
        SubscriptionStatus::parse(&s)
            .ok_or_else(|| bad("subscriptions.status", s, "a Subscription status"))
    }
}

impl From<SubscriptionStatus> for String {
    fn from(s: SubscriptionStatus) -> Self {
        s.as_str().to_owned()
    }
}

/// A list of strings stored as a JSON array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonList(pub Vec<String>);

impl TryFrom<String> for JsonList {
    type Error = BadColumn;
    fn try_from(s: String) -> Result<Self, BadColumn> {
        serde_json::from_str(&s)
            .map(JsonList)
            .map_err(|_| bad("a list column", s, "a JSON array of strings"))
    }
}

impl From<JsonList> for String {
    fn from(l: JsonList) -> Self {
        l.to_text()
    }
}

impl JsonList {
    /// A column read on its own, outside a row's `deserialize_as` (a query selecting a few
    /// columns), its failure reported as Diesel reports a row's.
    pub fn from_column(text: String) -> diesel::QueryResult<Self> {
        Self::try_from(text).map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))
    }

    /// The stored text.
    pub fn to_text(&self) -> String {
        // A list of strings always serialises; the fallback is unreachable.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }
}

impl std::ops::Deref for JsonList {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

/// ODS codes stored space-separated (the notification trigger matches on the text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouncilList(pub Vec<String>);

impl TryFrom<String> for CouncilList {
    type Error = BadColumn;
    fn try_from(s: String) -> Result<Self, BadColumn> {
        let codes: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        if codes
            .iter()
            .all(|c| crate::domain::OdsCode::parse(c).is_some())
        {
            Ok(CouncilList(codes))
        } else {
            Err(bad("audit_events.councils", s, "space-separated ODS codes"))
        }
    }
}

impl From<CouncilList> for String {
    fn from(l: CouncilList) -> Self {
        l.0.join(" ")
    }
}

impl CouncilList {
    /// The stored text.
    pub fn to_text(&self) -> String {
        self.0.join(" ")
    }

    pub fn contains(&self, ods: &str) -> bool {
        self.0.iter().any(|c| c == ods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_that_does_not_parse_is_an_error_not_a_default() {
        assert!(JsonList::try_from("not json".to_owned()).is_err());
        assert!(JsonList::try_from("[1, 2]".to_owned()).is_err());
        assert!(FlagStatus::try_from("actve".to_owned()).is_err());
        assert!(SubscriptionStatus::try_from("".to_owned()).is_err());
        assert!(CouncilList::try_from("LA901 la902".to_owned()).is_err());
        let e = JsonList::try_from("{".to_owned())
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("JSON array")));
    }

    #[test]
    fn typed_columns_round_trip_through_their_text() {
        let l = JsonList(vec!["a".into(), "b \"c\"".into()]);
        assert_eq!(JsonList::try_from(String::from(l.clone())).ok(), Some(l));
        let c = CouncilList(vec!["LA901".into(), "LA902".into()]);
        assert_eq!(String::from(c.clone()), "LA901 LA902");
        assert_eq!(
            CouncilList::try_from("LA901 LA902".to_owned()).ok(),
            Some(c)
        );
        for s in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::try_from(String::from(s)).ok(), Some(s));
        }
    }
}
