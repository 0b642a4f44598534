//! A JSON Schema checker for the subset docs/openapi.json uses: `type` (one or a list, `null`
//! included), `properties`, `required`, `additionalProperties: false`, `items`, `enum`,
//! `oneOf`, `minimum` and local `$ref`s (`#/components/schemas/…`). Anything else in a schema is
//! refused, so the spec cannot quietly use a keyword this checker would ignore.

use serde_json::Value;

/// Keywords the checker understands (or that only document: `description`, `format`).
const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "oneOf",
    "minimum",
    "$ref",
    "description",
    "format",
];

/// Checks `value` against `schema`, resolving `$ref`s in `root` (the whole spec). Returns every
/// violation, each with the JSON path where it is.
pub fn check(root: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(root, schema, value, "$", &mut errors);
    errors
}

fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local $refs: {reference}"));
    root.pointer(pointer)
        .unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other:?} in the spec"),
    }
}

fn walk(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        panic!("schema at {at} is not an object: {schema}");
    };
    for k in s.keys() {
        assert!(
            KNOWN.contains(&k.as_str()),
            "the spec uses {k:?} at {at}, which the checker does not know"
        );
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        walk(root, resolve(root, r), v, at, errors);
        return;
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .any(|t| type_matches(t.as_str().expect("type name"), v)),
            _ => panic!("bad type at {at}"),
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| check(root, o, v).is_empty())
            .count();
        if matching != 1 {
            errors.push(format!("{at}: {v} matches {matching} of oneOf, not one"));
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().expect("required names");
            if !obj.contains_key(r) {
                errors.push(format!("{at}: missing required {r:?}"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => walk(root, ps, val, &format!("{at}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: {k:?} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            walk(root, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_catches_what_it_claims_to() {
        let root =
            json!({"components": {"schemas": {"N": {"type": ["integer", "null"], "minimum": 1}}}});
        let s = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["a"],
            "properties": {
                "a": {"$ref": "#/components/schemas/N"},
                "b": {"type": "array", "items": {"enum": ["x", "y"]}},
                "c": {"oneOf": [{"type": "string"}, {"type": "null"}]}
            }
        });
        assert!(check(&root, &s, &json!({"a": 3, "b": ["x"], "c": null})).is_empty());
        assert!(check(&root, &s, &json!({"a": null})).is_empty());
        let bad = check(&root, &s, &json!({"a": 0, "b": ["z"], "c": 1, "d": true}));
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert_eq!(check(&root, &s, &json!({})).len(), 1);
    }
}
