//! A fuzzer that stays (issue "Hostile input", scope 9): it mutates the project's own example
//! resources and Bundles — bytes, structure, depth, size, strings — in JSON and XML, sends them
//! to a running server on 127.0.0.1, and reports the statuses, every 5xx and any crash or
//! request left unanswered, with the input saved. `cpis-bench fuzz` runs it against a server of
//! its own (or `--url`); `cargo test` runs a deterministic slice (a fixed seed, a few thousand
//! inputs) against a test server.
//!
//! Every input is derived from the seed alone, so a failure is reproduced by the seed and the
//! input's number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Who sends an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Council,
    Admin,
    Clinician,
    /// No token, or a garbled one.
    Nobody,
}

/// The bearer tokens the fuzzer sends (a council of the examples, LA901, an administrator and a
/// clinician).
#[derive(Debug, Clone)]
pub struct Tokens {
    pub council: String,
    pub admin: String,
    pub clinician: String,
}

/// One input.
#[derive(Debug, Clone)]
pub struct Case {
    pub number: u64,
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub who: Who,
    pub body: Vec<u8>,
    /// How it was made, for the report.
    pub how: String,
}

/// A small, fast, seedable generator (xorshift64*): the inputs depend on the seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Seed {
    resource: &'static str,
    method: &'static str,
    path: String,
    who: Who,
    json: Value,
}

fn example(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// The project's own examples, each with the interaction that takes it.
fn seeds() -> Vec<Seed> {
    let flag = example(include_str!("../examples/flag.json"));
    let organization = example(include_str!("../examples/organization.json"));
    let mut subscription = example(include_str!("../examples/subscription.json"));
    // Never an address off this machine, should a server under test ever post to it.
    subscription["channel"]["endpoint"] = json!("https://127.0.0.1:9/cpis/notifications");
    let batch = example(include_str!("../examples/bundles/bundle-00001.json"));
    let patient = batch["entry"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["resource"]["resourceType"] == "Patient")
        })
        .map(|e| e["resource"].clone())
        .unwrap_or_else(|| json!({}));
    let nhs = patient["id"].as_str().unwrap_or("9990500002").to_owned();
    let mut transaction = batch.clone();
    transaction["type"] = json!("transaction");
    let org_id = organization["id"].as_str().unwrap_or("LA904").to_owned();
    vec![
        Seed {
            resource: "Flag",
            method: "POST",
            path: "/Flag".into(),
            who: Who::Council,
            json: flag.clone(),
        },
        Seed {
            resource: "Flag",
            method: "PUT",
            path: "/Flag?identifier=https%3A%2F%2Fla901.example.org%2FId%2Fplan%7CCPP-2026-0042"
                .into(),
            who: Who::Council,
            json: flag,
        },
        Seed {
            resource: "Patient",
            method: "PUT",
            path: format!("/Patient/{nhs}"),
            who: Who::Council,
            json: patient.clone(),
        },
        Seed {
            resource: "Patient",
            method: "POST",
            path: "/Patient".into(),
            who: Who::Council,
            json: patient,
        },
        Seed {
            resource: "Bundle",
            method: "POST",
            path: "/".into(),
            who: Who::Council,
            json: batch,
        },
        Seed {
            resource: "Bundle",
            method: "POST",
            path: "/".into(),
            who: Who::Council,
            json: transaction,
        },
        Seed {
            resource: "Organization",
            method: "PUT",
            path: format!("/Organization/{org_id}"),
            who: Who::Admin,
            json: organization,
        },
        Seed {
            resource: "Subscription",
            method: "POST",
            path: "/Subscription".into(),
            who: Who::Council,
            json: subscription,
        },
    ]
}

/// Search paths a clinician, a council or an auditor sends, to be mutated in their query.
const SEARCHES: &[&str] = &[
    "/Flag?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9990500002&_include=Flag:author",
    "/Flag?subject=Patient/9449306753&_include=Flag:patient&_count=5",
    "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
    "/AuditEvent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number%7C9449306753",
    "/Patient/9449306753",
    "/Flag?identifier=https://la901.example.org/Id/plan%7CCPP-2026-0042",
    "/Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CLA901",
];

/// Bytes worth inserting: controls, quotes, brackets, escapes, invalid UTF-8.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\x1b[2J",
    b"\x07",
    b"\xc2\x9b",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"<",
    b">",
    b"&",
    b"&#0;",
    b"&#x1b;",
    b"]]>",
    b"<!--",
    b"\xff\xfe",
    b"\xc0\x80",
    b"1e999999",
    b"-0.0000000000000000000001",
    b"null",
    b"[]",
    b"{}",
    b"<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]>",
];

/// What the fuzzer found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Inputs answered 5xx, each with where it was saved (when saving).
    pub server_errors: Vec<(u64, String, Option<PathBuf>)>,
    /// Inputs that got no answer (the server gone, or a time-out).
    pub unanswered: Vec<(u64, String, Option<PathBuf>)>,
    /// Whether the server stopped answering altogether.
    pub crashed: bool,
    /// The largest response body seen, in bytes, and the largest input.
    pub largest_response: usize,
    pub largest_input: usize,
    pub elapsed: Duration,
}

impl Report {
    /// The report as lines of text (the command's output).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("inputs sent            {}", self.sent),
            format!("elapsed                {:.1} s", self.elapsed.as_secs_f64()),
        ];
        for (s, n) in &self.by_status {
            out.push(format!("status {s}             {n}"));
        }
        out.push(format!(
            "largest input          {} bytes",
            self.largest_input
        ));
        out.push(format!(
            "largest response       {} bytes",
            self.largest_response
        ));
        out.push(format!(
            "5xx answers            {}",
            self.server_errors.len()
        ));
        out.push(format!("unanswered             {}", self.unanswered.len()));
        out.push(format!(
            "server crashed         {}",
            if self.crashed { "yes" } else { "no" }
        ));
        for (n, how, saved) in self.server_errors.iter().chain(&self.unanswered) {
            out.push(format!(
                "  input {n}: {how}{}",
                saved
                    .as_ref()
                    .map(|p| format!(" (saved as {})", p.display()))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// The `n`th input of the run seeded `seed`, no larger than about `max_bytes`.
pub fn case(seed: u64, n: u64, max_bytes: usize) -> Case {
    let mut rng = Rng::new(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let seeds = seeds();
    if rng.chance(12) {
        return search_case(&mut rng, n);
    }
    let s = rng.pick(&seeds);
    let xml = rng.chance(35);
    let mut how = format!(
        "{} {} as {}",
        s.method,
        s.path,
        if xml { "XML" } else { "JSON" }
    );
    let mut value = s.json.clone();
    let structural = rng.below(4) + usize::from(rng.chance(50));
    for _ in 0..structural {
        how.push_str(", ");
        how.push_str(&mutate_value(&mut value, &mut rng, max_bytes));
    }
    let mut body = if xml {
        // fhirbolt panics (contained, but loudly) on empty values: render those from the seed.
        let renderable = crate::fhir::json::forbidden_empties(&value, s.resource).is_empty();
        crate::fhir::codec::json_to_xml(if renderable { &value } else { &s.json })
            .or_else(|_| crate::fhir::codec::json_to_xml(&s.json))
            .unwrap_or_default()
    } else {
        serde_json::to_vec(&value).unwrap_or_default()
    };
    let byte_level = if rng.chance(50) { rng.below(4) + 1 } else { 0 };
    for _ in 0..byte_level {
        how.push_str(", ");
        how.push_str(&mutate_bytes(
            &mut body, &mut rng, xml, s.resource, max_bytes,
        ));
    }
    body.truncate(max_bytes.max(64) * 2);
    let content_type = if rng.chance(4) {
        *rng.pick(&[
            None,
            Some("text/plain"),
            Some("application/fhir+json; charset=latin1"),
            Some("application/xml"),
            Some("application/json"),
        ])
    } else if xml {
        Some("application/fhir+xml")
    } else {
        Some("application/fhir+json")
    };
    let who = if rng.chance(3) { Who::Nobody } else { s.who };
    Case {
        number: n,
        method: s.method,
        path: s.path.clone(),
        content_type,
        who,
        body,
        how,
    }
}

fn search_case(rng: &mut Rng, n: u64) -> Case {
    let mut path = (*rng.pick(SEARCHES)).to_owned();
    let how = match rng.below(6) {
        0 => {
            let at = rng.below(path.len());
            let pct = *rng.pick(&["%00", "%1b", "%ff", "%", "%zz", "%7C%7C", "&&&", "=", "?"]);
            path.insert_str(at.max(1), pct);
            format!("search with {pct} inserted")
        }
        1 => {
            path.push_str(&"&_count=1".repeat(rng.below(200) + 1));
            "search with repeated parameters".into()
        }
        2 => {
            path.push_str(&format!("&x={}", "9".repeat(rng.below(12_000))));
            "search with a long value".into()
        }
        3 => {
            path.push_str(rng.pick::<&str>(&[
                "&_count=-1",
                "&_count=99999999999999999999",
                "&_include=*",
                "&_cursor=%00",
                "&_format=text/html",
                "&date=ge2026-13-45",
            ]));
            "search with a bad parameter".into()
        }
        4 => {
            path = path.replace(
                "9449306753",
                rng.pick::<&str>(&[
                    "0000000000",
                    "944930675",
                    "94493067531",
                    "9449306754",
                    "999%20000%200000",
                ]),
            );
            "search with a bad NHS number".into()
        }
        _ => "search as written".into(),
    };
    let who = *rng.pick(&[Who::Clinician, Who::Council, Who::Admin, Who::Nobody]);
    Case {
        number: n,
        method: "GET",
        path,
        content_type: None,
        who,
        body: Vec::new(),
        how,
    }
}

/// A random place in `v`, as a JSON pointer: descends to a random child until it stops or
/// reaches a leaf.
fn random_pointer(v: &Value, rng: &mut Rng) -> String {
    let mut pointer = String::new();
    let mut cur = v;
    loop {
        if rng.chance(25) {
            return pointer;
        }
        let next = match cur {
            Value::Object(m) if !m.is_empty() => m
                .iter()
                .nth(rng.below(m.len()))
                .map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c)),
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a.get(i).map(|c| (i.to_string(), c))
            }
            _ => None,
        };
        let Some((step, child)) = next else {
            return pointer;
        };
        pointer.push('/');
        pointer.push_str(&step);
        cur = child;
    }
}

fn mutate_value(v: &mut Value, rng: &mut Rng, max_bytes: usize) -> String {
    let choice = rng.below(14);
    if choice == 12 {
        if let Value::Object(m) = v {
            m.insert(
                "resourceType".into(),
                json!(*rng.pick(&["Patient", "Flag", "Bundle", "Subscription", "X", ""])),
            );
        }
        return "resourceType changed".into();
    }
    let pointer = random_pointer(v, rng);
    let Some(node) = v.pointer_mut(&pointer) else {
        return "nothing changed".into();
    };
    match choice {
        0 => {
            *node = Value::Null;
            "a value made null".into()
        }
        1 => {
            *node = json!([]);
            "a value made []".into()
        }
        2 => {
            *node = json!({});
            "a value made {}".into()
        }
        3 => {
            *node = json!("");
            "a value made \"\"".into()
        }
        4 => {
            let c = *rng.pick(&[
                '\u{0}', '\u{1b}', '\u{7}', '\u{9b}', '\u{7f}', '\u{fffe}', '\u{202e}',
            ]);
            *node = json!(format!("text{c}more"));
            format!("a string holding U+{:04X}", u32::from(c))
        }
        5 => {
            let n = rng.below(max_bytes.min(200_000)) + 1;
            *node = json!("x".repeat(n));
            format!("a string of {n} characters")
        }
        6 => {
            // Around the server's limit (32); deeper nesting is made in bytes (`mutate_bytes`):
            // a deep `Value` would overflow the fuzzer's own stack when rendered or dropped.
            let depth = *rng.pick(&[8, 24, 31, 32, 33, 40]);
            let mut deep = json!({ "url": "http://x", "valueString": "x" });
            for _ in 0..depth {
                deep = json!({ "url": "http://x", "extension": [deep] });
            }
            *node = deep;
            format!("an extension nested {depth} deep")
        }
        7 => {
            if let Value::Array(a) = node {
                if let Some(first) = a.first().cloned() {
                    let size = first.to_string().len().max(1);
                    let k = rng.below((max_bytes / size).clamp(1, 20_000)) + 1;
                    a.extend(std::iter::repeat_n(first, k));
                    return format!("an array item repeated {k} times");
                }
            }
            *node = json!(vec![
                json!([]);
                rng.below(max_bytes / 3 + 1).min(100_000) + 1
            ]);
            "a value made an array of empty arrays".into()
        }
        8 => {
            if let Value::Object(m) = node {
                if let Some(k) = m.keys().nth(rng.below(m.len())).cloned() {
                    m.shift_remove(&k);
                    return format!("property {k} removed");
                }
            }
            *node = json!(true);
            "a value made true".into()
        }
        9 => {
            if let Value::Object(m) = node {
                m.insert(
                    rng.pick(&[
                        "note",
                        "reasonCode",
                        "text",
                        "_status",
                        "contained",
                        "modifierExtension",
                        "\u{0}",
                    ])
                    .to_string(),
                    json!({"div": "<div>why</div>"}),
                );
                return "an element added".into();
            }
            *node = json!(12345678901234567890u64);
            "a value made a huge number".into()
        }
        10 => {
            *node = json!(rng
                .pick(&[
                    "2026-02-30",
                    "9999-99-99",
                    "-2026-01-01",
                    "2026-01-01T25:00:00Z",
                    "urn:uuid:x",
                    "Patient/../../etc",
                    "Organization/",
                    "https://127.0.0.1:9/x",
                    "https://[::1]:1/x"
                ])
                .to_string());
            "a value made an odd string".into()
        }
        11 => {
            *node = json!({ "resourceType": *rng.pick(&["Flag", "Patient", "Bundle", "Basic", "Nope"]) });
            "a value made a nested resource".into()
        }
        _ => {
            *node = json!(-1.5e300);
            "a value made a tiny float".into()
        }
    }
}

fn mutate_bytes(
    body: &mut Vec<u8>,
    rng: &mut Rng,
    xml: bool,
    resource: &str,
    max_bytes: usize,
) -> String {
    let len = body.len();
    match rng.below(8) {
        0 => {
            for _ in 0..rng.below(8) + 1 {
                let at = rng.below(len.max(1));
                if let Some(b) = body.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            "bits flipped".into()
        }
        1 => {
            let bytes = *rng.pick(INTERESTING);
            let at = rng.below(len + 1);
            body.splice(at..at, bytes.iter().copied());
            format!("{:?} inserted", String::from_utf8_lossy(bytes))
        }
        2 => {
            let at = rng.below(len + 1);
            body.truncate(at);
            format!("truncated at {at}")
        }
        3 => {
            let a = rng.below(len + 1);
            let b = (a + rng.below(256)).min(len);
            let slice = body[a..b].to_vec();
            let times = rng.below(max_bytes / slice.len().max(1) + 1).min(10_000);
            for _ in 0..times {
                body.splice(b..b, slice.iter().copied());
            }
            format!("a {}-byte slice repeated {times} times", slice.len())
        }
        4 => {
            let depth = *rng.pick(&[33, 680, 1_000, 10_000, 100_000]);
            let depth = depth.min(max_bytes / 12 + 1);
            *body = if xml {
                format!(
                    "<{resource} xmlns=\"http://hl7.org/fhir\">{}{}</{resource}>",
                    "<extension url=\"http://x\">".repeat(depth),
                    "</extension>".repeat(depth)
                )
                .into_bytes()
            } else {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            };
            format!("replaced by {depth} levels of nesting")
        }
        5 => {
            body.clear();
            "emptied".into()
        }
        6 => {
            let n = rng.below(max_bytes.min(1 << 20)) + 1;
            body.extend((0..n).map(|i| (i as u8).wrapping_mul(31)));
            format!("{n} bytes of noise appended")
        }
        _ => {
            if xml {
                let at = body.iter().position(|b| *b == b'>').map_or(0, |p| p + 1);
                body.splice(at..at, b"<![CDATA[<x>]]><!-- c --><?pi x?>".iter().copied());
                "CDATA, comment and PI inserted".into()
            } else {
                body.splice(0..0, b"\xef\xbb\xbf".iter().copied());
                "byte-order mark prepended".into()
            }
        }
    }
}

/// Sends `count` inputs of the run `seed` (or fewer, if `time` runs out) to `base`, one at a
/// time, and reports. Inputs answered 5xx or not at all are saved to `save` when given.
pub async fn run(
    base: &str,
    tokens: &Tokens,
    seed: u64,
    count: u64,
    time: Duration,
    max_bytes: usize,
    save: Option<&Path>,
) -> Report {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .disable_redirects()
        .finish();
    let started = Instant::now();
    let mut report = Report::default();
    for n in 0..count {
        if started.elapsed() >= time {
            break;
        }
        let c = case(seed, n, max_bytes);
        report.largest_input = report.largest_input.max(c.body.len());
        let method = actix_web::http::Method::from_bytes(c.method.as_bytes())
            .unwrap_or(actix_web::http::Method::GET);
        let mut req = client.request(method, format!("{base}{}", c.path));
        let token = match c.who {
            Who::Council => Some(tokens.council.as_str()),
            Who::Admin => Some(tokens.admin.as_str()),
            Who::Clinician => Some(tokens.clinician.as_str()),
            Who::Nobody => (n % 2 == 0).then_some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
        };
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        if let Some(ct) = c.content_type {
            req = req.insert_header(("Content-Type", ct));
        }
        report.sent += 1;
        let sent = if c.method == "GET" {
            req.send().await
        } else {
            req.send_body(c.body.clone()).await
        };
        match sent {
            Ok(mut res) => {
                let status = res.status().as_u16();
                *report.by_status.entry(status).or_default() += 1;
                let body = res.body().limit(256 * 1024 * 1024).await;
                let size = body.as_ref().map_or(0, |b| b.len());
                report.largest_response = report.largest_response.max(size);
                if status >= 500 {
                    let saved = save.and_then(|d| save_case(d, seed, &c));
                    report
                        .server_errors
                        .push((n, format!("{status} to {}", c.how), saved));
                }
            }
            Err(e) => {
                let saved = save.and_then(|d| save_case(d, seed, &c));
                report
                    .unanswered
                    .push((n, format!("{e} for {}", c.how), saved));
                if !alive(&client, base).await {
                    report.crashed = true;
                    break;
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

async fn alive(client: &awc::Client, base: &str) -> bool {
    for _ in 0..20 {
        if let Ok(r) = client.get(format!("{base}/metadata")).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Saves an input as an HTTP request (head, blank line, body); returns where.
fn save_case(dir: &Path, seed: u64, c: &Case) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("fuzz-seed{seed}-input{}.http", c.number));
    let mut out = format!("{} {} HTTP/1.1\r\n", c.method, c.path).into_bytes();
    if let Some(ct) = c.content_type {
        out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!("X-Fuzz-Who: {:?}\r\nX-Fuzz-How: {}\r\n\r\n", c.who, c.how).as_bytes(),
    );
    out.extend_from_slice(&c.body);
    std::fs::write(&path, out).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_depend_on_the_seed_alone() {
        let a = case(7, 42, 4096);
        let b = case(7, 42, 4096);
        assert_eq!((a.path, a.body, a.how), (b.path, b.body, b.how));
        assert_ne!(case(7, 43, 4096).how, case(8, 43, 4096).how);
    }

    #[test]
    fn every_seed_parses() {
        for s in seeds() {
            assert!(s.json.get("resourceType").is_some(), "{}", s.path);
        }
    }
}
