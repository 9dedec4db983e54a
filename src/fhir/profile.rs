//! Checks a resource against this project's StructureDefinitions in `fhir-profiles/`
//! (FHIR R4 §2.11 "Profiling": differential, cardinality, fixed values, slicing by `url`,
//! required bindings).
//!
//! The profiles are *closed*: an element the differential does not list is refused. That is
//! how data minimisation is enforced (DOMAIN.md "Data held (and nothing more)": no reason for a
//! plan, no case notes, no free text) — the profile files are the single source of what a
//! submission may contain, and every violation in a body is reported together with the
//! `expression` of the element at fault.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{Issue, Issues};

/// The conformance resources shipped in `fhir-profiles/`, served as they are.
pub const CONFORMANCE_FILES: &[(&str, &str, &str)] = &[
    (
        "StructureDefinition",
        "CPIS-Patient",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-Patient.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-Flag",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-Flag.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-Organization",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-Organization.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-CareTeam",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-CareTeam.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-PractitionerRole",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-PractitionerRole.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-PatientFlag",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-PatientFlag.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-CarePlan",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-CarePlan.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-CouncilCareTeam",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-CouncilCareTeam.json"),
    ),
    (
        "StructureDefinition",
        "CPIS-AuditEvent",
        include_str!("../../fhir-profiles/StructureDefinition-CPIS-AuditEvent.json"),
    ),
    (
        "ValueSet",
        "England-ChildProtectionPlan",
        include_str!("../../fhir-profiles/ValueSet-England-ChildProtectionPlan.json"),
    ),
    (
        "ValueSet",
        "CPIS-CouncilContactPurpose",
        include_str!("../../fhir-profiles/ValueSet-CPIS-CouncilContactPurpose.json"),
    ),
    (
        "CodeSystem",
        "CPIS-CouncilContactPurpose",
        include_str!("../../fhir-profiles/CodeSystem-CPIS-CouncilContactPurpose.json"),
    ),
    (
        "ValueSet",
        "CPIS-AccessType",
        include_str!("../../fhir-profiles/ValueSet-CPIS-AccessType.json"),
    ),
    (
        "CodeSystem",
        "CPIS-AccessType",
        include_str!("../../fhir-profiles/CodeSystem-CPIS-AccessType.json"),
    ),
    (
        "CodeSystem",
        "CPIS-Role",
        include_str!("../../fhir-profiles/CodeSystem-CPIS-Role.json"),
    ),
    (
        "CodeSystem",
        "CPIS-SubmissionResult",
        include_str!("../../fhir-profiles/CodeSystem-CPIS-SubmissionResult.json"),
    ),
    (
        "Basic",
        "cpis-access-notification",
        include_str!("../../fhir-profiles/Basic-cpis-access-notification.json"),
    ),
    (
        "OperationDefinition",
        "purge",
        include_str!("../../fhir-profiles/OperationDefinition-purge.json"),
    ),
    (
        "OperationDefinition",
        "access-report",
        include_str!("../../fhir-profiles/OperationDefinition-access-report.json"),
    ),
];

#[derive(Debug, Clone)]
struct ElementDef {
    id: String,
    /// The last path segment without the slice name, e.g. `value[x]`, `extension`.
    name: String,
    /// The JSON property it is: its name, or a choice's one allowed type's (`value[x]` of type
    /// `string` is `valueString`); `None` for a choice with no type, which nothing matches. Made
    /// once, as the profile loads: every property of every submitted resource is matched to it.
    json_key: Option<String>,
    slice: Option<String>,
    min: usize,
    /// `None` for `*`.
    max: Option<usize>,
    /// Whether the base element repeats, which decides JSON array-ness (FHIR R4 §2.6.2.3).
    base_array: bool,
    type_code: Option<String>,
    type_profile: Option<String>,
    fixed: Option<String>,
    binding: Option<String>,
    note: Option<String>,
}

impl ElementDef {
    fn json_key_matches(&self, key: &str) -> bool {
        self.json_key.as_deref() == Some(key)
    }

    fn json_key_of(name: &str, type_code: Option<&str>) -> Option<String> {
        match name.strip_suffix("[x]") {
            Some(prefix) => type_code.map(|t| {
                let mut expected = prefix.to_owned();
                let mut chars = t.chars();
                if let Some(first) = chars.next() {
                    expected.push(first.to_ascii_uppercase());
                    expected.push_str(chars.as_str());
                }
                expected
            }),
            None => Some(name.to_owned()),
        }
    }

    fn is_primitive(&self) -> bool {
        self.type_code
            .as_deref()
            .and_then(|t| t.chars().next())
            .is_some_and(|c| c.is_ascii_lowercase())
    }
}

/// One closed profile, indexed by parent element id.
#[derive(Debug)]
pub struct Profile {
    pub resource_type: String,
    pub url: String,
    children: HashMap<String, Vec<ElementDef>>,
}

/// All profiles and the codes of the value sets they bind to.
#[derive(Debug)]
pub struct Profiles {
    profiles: HashMap<String, Profile>,
    /// Per value set, its codes by system.
    value_sets: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl Profiles {
    /// Loads the shipped files. They are compiled in, so a failure is a build defect and is
    /// reported at start-up.
    pub fn load() -> Result<Self, String> {
        let mut profiles = HashMap::new();
        let mut code_systems: HashMap<String, Vec<String>> = HashMap::new();
        let mut vs_raw = Vec::new();
        for (kind, id, text) in CONFORMANCE_FILES {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("{kind}/{id}: {e}"))?;
            match *kind {
                "StructureDefinition" => {
                    let p = Profile::from_json(&v).map_err(|e| format!("{kind}/{id}: {e}"))?;
                    profiles.insert((*id).to_owned(), p);
                }
                "CodeSystem" => {
                    let url = v["url"].as_str().unwrap_or_default().to_owned();
                    let codes = concepts(&v["concept"]);
                    code_systems.insert(url, codes);
                }
                "ValueSet" => vs_raw.push(v),
                _ => {}
            }
        }
        let mut value_sets = HashMap::new();
        for vs in vs_raw {
            let url = vs["url"].as_str().unwrap_or_default().to_owned();
            let mut codes: HashMap<String, HashSet<String>> = HashMap::new();
            for inc in vs["compose"]["include"].as_array().into_iter().flatten() {
                let system = inc["system"].as_str().unwrap_or_default();
                let listed = concepts(&inc["concept"]);
                let all = if listed.is_empty() {
                    code_systems.get(system).cloned().unwrap_or_default()
                } else {
                    listed
                };
                codes.entry(system.to_owned()).or_default().extend(all);
            }
            value_sets.insert(url, codes);
        }
        Ok(Self {
            profiles,
            value_sets,
        })
    }

    /// The profile submissions of `resource_type` are checked against (`CPIS-{type}`).
    pub fn get(&self, resource_type: &str) -> Option<&Profile> {
        self.profiles.get(&format!("CPIS-{resource_type}"))
    }

    /// The violations of the profile for `resource`'s type (at most `MAX_ISSUES`, then a
    /// count of the rest), and every string holding a control character FHIR forbids; empty
    /// means it conforms.
    pub fn validate(&self, resource_type: &str, resource: &Value) -> Vec<Issue> {
        self.validate_as(&format!("CPIS-{resource_type}"), resource)
    }

    /// [`Profiles::validate`] against the profile with this id (the national views' profiles
    /// are checked this way: several describe one resource type).
    pub fn validate_as(&self, profile_id: &str, resource: &Value) -> Vec<Issue> {
        let mut out = Issues::default();
        let Some(profile) = self.profiles.get(profile_id) else {
            out.push(Issue::general(
                "not-supported",
                format!("no profile {profile_id}"),
            ));
            return out.finish();
        };
        let resource_type = profile.resource_type.as_str();
        match resource.as_object() {
            Some(obj) => {
                let mut path = resource_type.to_owned();
                self.check_object(profile, obj, resource_type, &mut path, &mut out)
            }
            None => out.push(Issue::general("structure", "a resource is a JSON object")),
        }
        for issue in crate::fhir::json::control_characters(resource, resource_type) {
            out.push(issue);
        }
        out.finish()
    }

    /// The checks below share one path buffer (`Flag.identifier[0].system`), extended and
    /// truncated in place: a Bundle's thousands of resources are checked without a string per
    /// element, and a path is copied only into an issue.
    fn check_object(
        &self,
        profile: &Profile,
        obj: &Map<String, Value>,
        elem_id: &str,
        path: &mut String,
        out: &mut Issues,
    ) {
        let no_children = Vec::new();
        let children = profile.children.get(elem_id).unwrap_or(&no_children);
        let len = path.len();
        for (key, val) in obj {
            if elem_id == profile.resource_type && key == "resourceType" {
                continue;
            }
            path.push('.');
            path.push_str(key);
            let def = children
                .iter()
                .find(|d| d.slice.is_none() && d.json_key_matches(key));
            match def {
                None => out.push(Issue::new(
                    "structure",
                    path.as_str(),
                    format!(
                        "{path} is not permitted: the CP-IS profile {} is closed and does not hold this element",
                        profile.url
                    ),
                )),
                Some(d) if d.max == Some(0) => out.push(Issue::new(
                    "business-rule",
                    path.as_str(),
                    format!(
                        "{path} is not permitted: {}",
                        d.note.as_deref().unwrap_or("the CP-IS profile excludes it")
                    ),
                )),
                Some(d) => self.check_element(profile, children, d, val, path, out),
            }
            path.truncate(len);
        }
        for d in children {
            if d.slice.is_none() && d.min > 0 && !obj.keys().any(|k| d.json_key_matches(k)) {
                let missing = format!("{path}.{}", d.name.replace("[x]", ""));
                out.push(Issue::new(
                    "required",
                    &missing,
                    format!("{missing} is required"),
                ));
            }
        }
    }

    fn check_element(
        &self,
        profile: &Profile,
        siblings: &[ElementDef],
        d: &ElementDef,
        val: &Value,
        path: &mut String,
        out: &mut Issues,
    ) {
        let items: &[Value] = match (d.base_array, val) {
            (true, Value::Array(a)) => a,
            (true, _) => {
                out.push(Issue::new(
                    "structure",
                    path.as_str(),
                    format!("{path} repeats in FHIR and must be a JSON array"),
                ));
                return;
            }
            (false, Value::Array(_)) => {
                out.push(Issue::new(
                    "structure",
                    path.as_str(),
                    format!("{path} does not repeat in FHIR and must not be a JSON array"),
                ));
                return;
            }
            (false, v) => std::slice::from_ref(v),
        };
        if d.max.is_some_and(|m| items.len() > m) {
            out.push(Issue::new(
                "structure",
                path.as_str(),
                format!(
                    "{path} may occur at most {} time(s) in a CP-IS resource",
                    d.max.unwrap_or_default()
                ),
            ));
        }
        if items.len() < d.min {
            out.push(Issue::new(
                "required",
                path.as_str(),
                format!("{path} must occur at least {} time(s)", d.min),
            ));
        }
        let len = path.len();
        // Each item's path: `[i]` after a repeating element's, the element's own otherwise.
        let item_path = |path: &mut String, i: usize| {
            path.truncate(len);
            if d.base_array {
                use std::fmt::Write;
                let _ = write!(path, "[{i}]");
            }
        };
        let sliced = |s: &&ElementDef| s.name == d.name && s.slice.is_some();
        if !siblings.iter().any(|s| sliced(&s)) {
            for (i, item) in items.iter().enumerate() {
                item_path(path, i);
                self.check_item(profile, d, item, path, out);
            }
            path.truncate(len);
            return;
        }
        // Slicing by `url` (the only discriminator these profiles use).
        let slices: Vec<&ElementDef> = siblings.iter().filter(sliced).collect();
        let mut counts = vec![0usize; slices.len()];
        for (i, item) in items.iter().enumerate() {
            item_path(path, i);
            let url = item.get("url").and_then(Value::as_str).unwrap_or_default();
            match slices
                .iter()
                .position(|s| s.type_profile.as_deref() == Some(url))
            {
                Some(i) => {
                    counts[i] += 1;
                    self.check_item(profile, slices[i], item, path, out);
                }
                None => out.push(Issue::new(
                    "business-rule",
                    path.as_str(),
                    format!("{path}: the extension '{url}' is not permitted in a CP-IS resource"),
                )),
            }
        }
        path.truncate(len);
        for (s, n) in slices.iter().zip(counts) {
            if n < s.min {
                out.push(Issue::new(
                    "required",
                    path.as_str(),
                    format!(
                        "{path}: the {} extension ({}) is required",
                        s.slice.as_deref().unwrap_or_default(),
                        s.type_profile.as_deref().unwrap_or_default()
                    ),
                ));
            }
            if s.max.is_some_and(|m| n > m) {
                out.push(Issue::new(
                    "structure",
                    path.as_str(),
                    format!(
                        "{path}: the {} extension may occur only once",
                        s.slice.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }

    fn check_item(
        &self,
        profile: &Profile,
        d: &ElementDef,
        item: &Value,
        path: &mut String,
        out: &mut Issues,
    ) {
        if d.is_primitive() {
            let t = d.type_code.as_deref().unwrap_or_default();
            if let Some(problem) = primitive_problem(t, item) {
                out.push(Issue::new(
                    "value",
                    path.as_str(),
                    format!("{path}: {problem}"),
                ));
                return;
            }
            if let (Some(fixed), Some(s)) = (&d.fixed, item.as_str()) {
                if s != fixed {
                    out.push(Issue::new(
                        "value",
                        path.as_str(),
                        format!("{path} must be '{fixed}', not '{s}'"),
                    ));
                }
            }
            return;
        }
        let Some(obj) = item.as_object() else {
            out.push(Issue::new(
                "structure",
                path.as_str(),
                format!("{path} must be a JSON object"),
            ));
            return;
        };
        self.check_object(profile, obj, &d.id, path, out);
        if let (Some(vs), Some("CodeableConcept")) = (&d.binding, d.type_code.as_deref()) {
            if let Some(codes) = self
                .value_sets
                .get(vs.split('|').next().unwrap_or_default())
            {
                let codings = obj.get("coding").and_then(Value::as_array);
                let ok = codings.into_iter().flatten().any(|c| {
                    let system = c["system"].as_str().unwrap_or_default();
                    let code = c["code"].as_str().unwrap_or_default();
                    codes
                        .get(system)
                        .is_some_and(|in_system| in_system.contains(code))
                });
                if !ok && codings.is_some() {
                    out.push(Issue::new(
                        "code-invalid",
                        format!("{path}.coding"),
                        format!("{path}: the code is not in the value set {vs}"),
                    ));
                }
            }
        }
    }
}

fn concepts(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect()
}

impl Profile {
    fn from_json(v: &Value) -> Result<Self, String> {
        let resource_type = v["type"].as_str().ok_or("no type")?.to_owned();
        let url = v["url"].as_str().ok_or("no url")?.to_owned();
        let mut children: HashMap<String, Vec<ElementDef>> = HashMap::new();
        let elements = v["differential"]["element"]
            .as_array()
            .ok_or("no differential")?;
        for e in elements {
            let id = e["id"].as_str().ok_or("element without id")?.to_owned();
            let Some((parent, last)) = id.rsplit_once('.') else {
                continue;
            };
            let (name, slice) = match last.split_once(':') {
                Some((n, s)) => (n.to_owned(), Some(s.to_owned())),
                None => (last.to_owned(), None),
            };
            let max = match e["max"].as_str().ok_or_else(|| format!("{id}: no max"))? {
                "*" => None,
                m => Some(m.parse().map_err(|_| format!("{id}: bad max"))?),
            };
            let ty = &e["type"][0];
            let fixed = ["fixedUri", "fixedCode", "fixedString"]
                .iter()
                .find_map(|k| e[*k].as_str().map(str::to_owned));
            let type_code = ty["code"].as_str().map(str::to_owned);
            let def = ElementDef {
                json_key: ElementDef::json_key_of(&name, type_code.as_deref()),
                name,
                slice,
                min: e["min"].as_u64().unwrap_or(0) as usize,
                max,
                base_array: e["base"]["max"].as_str() == Some("*"),
                type_code,
                type_profile: ty["profile"][0].as_str().map(str::to_owned),
                fixed,
                binding: (e["binding"]["strength"].as_str() == Some("required"))
                    .then(|| e["binding"]["valueSet"].as_str().map(str::to_owned))
                    .flatten(),
                note: e["comment"].as_str().map(str::to_owned),
                id: id.clone(),
            };
            children.entry(parent.to_owned()).or_default().push(def);
        }
        Ok(Self {
            resource_type,
            url,
            children,
        })
    }
}

/// Checks the JSON form of a FHIR primitive (FHIR R4 §2.24.0.1 "Primitive Types").
fn primitive_problem(type_code: &str, v: &Value) -> Option<String> {
    if type_code == "boolean" {
        return (!v.is_boolean()).then(|| "must be true or false".to_owned());
    }
    let Some(s) = v.as_str() else {
        return Some(format!("must be a JSON string ({type_code})"));
    };
    if s.trim().is_empty() {
        return Some("must not be blank".to_owned());
    }
    let bad = match type_code {
        "code" => s.trim() != s || s.contains("  "),
        "id" => {
            s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
        "uri" | "canonical" => s.chars().any(char::is_whitespace),
        "date" => parse_date(s).is_none(),
        "dateTime" => parse_date(s).is_none() && parse_instant(s).is_none(),
        "instant" => parse_instant(s).is_none(),
        _ => false,
    };
    bad.then(|| format!("'{s}' is not a valid FHIR {type_code}"))
}

/// A FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`. Returns the full date where there is one.
pub fn parse_date(s: &str) -> Option<Option<chrono::NaiveDate>> {
    match s.len() {
        4 => s.parse::<u16>().ok().map(|_| None),
        7 => chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
            .ok()
            .map(|_| None),
        10 => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(Some),
        _ => None,
    }
}

/// A FHIR `instant` (or full `dateTime`): date, time and zone.
pub fn parse_instant(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_profiles_load() {
        let p = Profiles::load();
        assert!(p.is_ok(), "{p:?}");
    }

    #[test]
    fn an_unknown_element_is_named() {
        let p = Profiles::load().ok();
        let issues = p
            .map(|p| p.validate("Flag", &json!({"resourceType": "Flag", "note": "x"})))
            .unwrap_or_default();
        assert!(issues
            .iter()
            .any(|i| i.expression.as_deref() == Some("Flag.note")));
    }
}
