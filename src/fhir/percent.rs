//! The percent codec of URLs (RFC 3986 §2.1), as FHIR search uses it (FHIR R4 §3.1.1.5: query
//! values are `application/x-www-form-urlencoded`, so `+` is a space).

/// Decodes `%XX` escapes and `+` in a query value; `None` for malformed escapes or bad UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a query component: unreserved characters, `:` and `/` stay as they are
/// (RFC 3986 §3.4 allows both in a query, and links stay readable), all else is escaped.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters: for a value inside another
/// URL (a conditional reference in a Bundle entry's `request.url`), where nothing may be read
/// as a delimiter.
pub fn encode_strict(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(
            decode("https%3A%2F%2Fx%7C1").as_deref(),
            Some("https://x|1")
        );
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("a+b").as_deref(), Some("a b"));
    }

    #[test]
    fn what_is_encoded_decodes_to_itself() {
        for s in [
            "https://fhir.nhs.uk/Id/nhs-number|9449306753",
            "a b&c=d",
            "é%",
        ] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
            assert_eq!(decode(&encode_strict(s)).as_deref(), Some(s));
        }
    }
}
