//! The shape check every request body passes before any recursive code sees it.
//!
//! serde_json, fhirbolt and the profile walker all recurse once per nesting level, and
//! fhirbolt's XML reader does so with large frames: about 680 nested elements overflow a
//! worker's stack and abort the whole process (STACK.md "fhirbolt"). A parsed body also costs
//! far more memory than its bytes (a 3-byte `[]` becomes a value of ~100 bytes). So each body is
//! first scanned here, iteratively and without allocating, for its nesting depth and its number
//! of values; a body past either limit is refused (400) before it is parsed, whatever the
//! thread's stack size. FHIR R4 §2.6.1 also forbids a DTD in FHIR XML, so a `<!DOCTYPE` is
//! refused here (which rules out entity-expansion bombs too).

use crate::error::Issue;

/// How deep and how large a body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most nested objects/arrays (JSON) or elements (XML).
    pub max_depth: usize,
    /// Most values (JSON objects, arrays and members; XML elements and attributes).
    pub max_nodes: usize,
}

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub depth: usize,
    pub nodes: usize,
}

/// Why a body was refused: malformed for FHIR (400), or larger than served (413).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Invalid(Issue),
    TooLarge(String),
}

fn too_deep(limits: Limits) -> Refused {
    Refused::Invalid(Issue::general(
        "too-costly",
        format!(
            "the body nests deeper than this server's limit of {} levels",
            limits.max_depth
        ),
    ))
}

fn too_many(limits: Limits) -> Refused {
    Refused::TooLarge(format!(
        "the body holds more than this server's limit of {} values",
        limits.max_nodes
    ))
}

/// Scans a JSON text: nesting of `{`/`[` outside strings, and values (containers plus the
/// members and elements their `,` and `:` separate). Malformed JSON is left for the parser to
/// describe; only depth and size are judged here.
pub fn scan_json(bytes: &[u8], limits: Limits) -> Result<Shape, Refused> {
    let mut shape = Shape::default();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                shape.depth = shape.depth.max(depth);
                if depth > limits.max_depth {
                    return Err(too_deep(limits));
                }
                shape.nodes += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' | b':' => shape.nodes += 1,
            _ => continue,
        }
        if shape.nodes > limits.max_nodes {
            return Err(too_many(limits));
        }
    }
    Ok(shape)
}

/// Scans an XML text: element nesting (start tags not self-closed, less end tags) and elements
/// plus attributes, skipping comments, CDATA sections and processing instructions, and quoted
/// attribute values (which may hold `>`). A DTD is refused.
pub fn scan_xml(bytes: &[u8], limits: Limits) -> Result<Shape, Refused> {
    let mut shape = Shape::default();
    let mut depth = 0usize;
    let mut i = 0usize;
    let n = bytes.len();
    let find = |from: usize, pat: &[u8]| -> usize {
        bytes[from.min(n)..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map_or(n, |p| from + p + pat.len())
    };
    while i < n {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            return Err(Refused::Invalid(Issue::general(
                "structure",
                "FHIR XML must not contain a DTD or any other <! declaration (FHIR R4 §2.6.1)",
            )));
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(i + 2, b">");
        } else {
            // A start tag: to its `>`, outside quoted attribute values.
            let mut j = i + 1;
            let mut quote = None;
            let mut attributes = 0usize;
            let mut self_closing = false;
            while j < n {
                let b = bytes[j];
                match quote {
                    Some(q) if b == q => quote = None,
                    Some(_) => {}
                    None => match b {
                        b'"' | b'\'' => quote = Some(b),
                        b'=' => attributes += 1,
                        b'>' => {
                            self_closing = bytes[j - 1] == b'/';
                            break;
                        }
                        _ => {}
                    },
                }
                j += 1;
            }
            shape.nodes += 1 + attributes;
            if shape.nodes > limits.max_nodes {
                return Err(too_many(limits));
            }
            if !self_closing {
                depth += 1;
                shape.depth = shape.depth.max(depth);
                if depth > limits.max_depth {
                    return Err(too_deep(limits));
                }
            }
            i = j + 1;
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_depth: 8,
        max_nodes: 50,
    };

    #[test]
    fn json_depth_counts_containers_outside_strings() {
        let s = scan_json(br#"{"a":[{"b":"[[[[[[[[[["}],"c":"\"{"}"#, L).ok();
        assert_eq!(s.map(|s| s.depth), Some(3));
        assert!(scan_json("[".repeat(9).as_bytes(), L).is_err());
        assert!(scan_json("[".repeat(8).as_bytes(), L).is_ok());
    }

    #[test]
    fn json_values_are_counted_and_bounded() {
        assert!(scan_json(format!("[{}]", "[],".repeat(60)).as_bytes(), L).is_err());
        assert!(scan_json(br#"{"a":1,"b":[1,2]}"#, L).is_ok());
    }

    #[test]
    fn xml_depth_skips_self_closed_elements_comments_and_quoted_brackets() {
        let xml = br#"<?xml version="1.0"?><Flag xmlns="http://hl7.org/fhir"><!-- <a><b><c> --><status value="a>b"/><code><text value='x'/></code><![CDATA[<x><y>]]></Flag>"#;
        let s = scan_xml(xml, L).ok();
        assert_eq!(s.map(|s| s.depth), Some(2));
        let deep = format!("{}{}", "<extension>".repeat(9), "</extension>".repeat(9));
        assert!(scan_xml(deep.as_bytes(), L).is_err());
    }

    #[test]
    fn a_dtd_is_refused() {
        let xml = br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><Flag xmlns="http://hl7.org/fhir"/>"#;
        assert!(scan_xml(xml, L).is_err());
    }

    #[test]
    fn unterminated_input_ends_the_scan() {
        assert!(scan_xml(b"<Flag a=\"", L).is_ok());
        assert!(scan_xml(b"<!--", L).is_ok());
        assert!(scan_json(b"\"\\", L).is_ok());
    }
}
