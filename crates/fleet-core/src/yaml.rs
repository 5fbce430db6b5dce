//! YAML read the way `kubectl apply -f` reads it, so a manifest means the same to fleet as to
//! kubectl.
//!
//! kubectl turns each YAML document into JSON with sigs.k8s.io/yaml's `YAMLToJSON`, which
//! decodes with its copy of go-yaml v2 (YAML 1.1 resolution) and then converts the result to
//! JSON (`convertToJSONableObject`, then Go's `encoding/json`). This module does the same from
//! the event stream of `granit-parser`:
//!
//! - **Plain scalars** resolve by go-yaml v2's `resolve.go` table: `y Y yes Yes YES true True
//!   TRUE on On ON` are `true`, `n N no No NO false False FALSE off Off OFF` are `false`,
//!   `~ null Null NULL` and the empty scalar are `null`; a scalar starting with a digit or sign
//!   is, after removing `_`, an integer as Go's `strconv.ParseInt(s, 0, 64)` reads it (`0644` is
//!   octal 420, `0x1F` 31, `0o17` 15, `0b101` 5), else an unsigned integer, else a float
//!   matching `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`; one starting with `.`
//!   is a float if Go's `ParseFloat` takes it. Everything else is a string, also timestamps
//!   (go-yaml v2 keeps them as strings when decoding into `interface{}`).
//! - **Quoted, literal and folded scalars** are strings. **Tags** `!!str`, `!!int`,
//!   `!!float`, `!!bool`, `!!null` resolve as go-yaml does (refusing a value of another type);
//!   other tags leave the text a string.
//! - **Keys** become strings as sigs.k8s.io/yaml makes them: integers in decimal, booleans as
//!   `true`/`false`; a null key is refused (as sigs.k8s.io/yaml does).
//! - **Floats** are written as Go writes them: an integral float as an integer (`1.0` is sent
//!   as `1`). `.inf` and `.nan` are refused, since Go's `encoding/json` refuses them too.
//! - **Merge keys** (`<<`) merge a mapping, or a sequence of mappings (earlier ones win), in
//!   place, as go-yaml v2 does; anchors and aliases are expanded.
//!
//! Where this module refuses what kubectl accepts, it is on purpose and named here: a key given
//! twice in one mapping (sigs.k8s.io/yaml keeps one of them "in an undefined order"; the API
//! server refuses it under kubectl's default `--validate=strict`), a float used as a key, and
//! `!!binary`. Every error names the line.

use std::borrow::Cow;
use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

use crate::limits::MAX_YAML_NODES;

/// Why a YAML text was refused, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    /// Where in the document, as `spec.template.volumes[0].secret.defaultMode`; empty for the
    /// document itself or a syntax error.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "line {}, field {}: {}",
                self.line, self.field, self.message
            )
        }
    }
}

impl YamlError {
    /// The same error one level further out: below `step` (`.key` or `[index]`).
    fn within(mut self, step: String) -> Self {
        let sep = if self.field.is_empty() || self.field.starts_with('[') {
            ""
        } else {
            "."
        };
        self.field = format!("{step}{sep}{}", self.field);
        self
    }
}

fn error(span: &Span, message: impl Into<String>) -> YamlError {
    YamlError {
        line: span.start.line(),
        field: String::new(),
        message: message.into(),
    }
}

/// A YAML node before conversion to JSON.
#[derive(Debug, Clone)]
enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        tag: Option<Tag>,
        span: Span,
    },
    Sequence(Vec<Node>, Span),
    Mapping(Vec<(Node, Node)>, Span),
}

impl Node {
    fn span(&self) -> &Span {
        match self {
            Node::Scalar { span, .. } | Node::Sequence(_, span) | Node::Mapping(_, span) => span,
        }
    }
}

/// The JSON value of every document of `text`, with the line each document starts on. An
/// empty document is `null`.
pub fn documents(text: &str) -> Result<Vec<(Value, usize)>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    let mut out = Vec::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            field: String::new(),
            message: e.info().to_string(),
        })?;
        match event {
            Event::DocumentStart(..) => {
                builder.anchors.clear();
                builder.root = None;
            }
            Event::DocumentEnd => {
                let line = builder
                    .root
                    .as_ref()
                    .map_or(span.start.line(), |n| n.span().start.line());
                let value = match builder.root.take() {
                    Some(node) => to_json(&node)?,
                    None => Value::Null,
                };
                out.push((value, line));
            }
            other => builder.event(other, span)?,
        }
    }
    Ok(out)
}

/// A collection whose end has not arrived yet, with its anchor id (0 for none).
enum Open {
    Sequence(Vec<Node>, Span, usize),
    /// The pairs so far, and a key whose value has not arrived yet.
    Mapping(Vec<(Node, Node)>, Option<Box<Node>>, Span, usize),
}

/// Builds nodes from events: a stack of open collections, anchors by id.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
}

impl Builder {
    fn count(&mut self, nodes: usize, span: &Span) -> Result<(), YamlError> {
        self.nodes += nodes;
        if self.nodes > MAX_YAML_NODES {
            return Err(error(
                span,
                format!("more than {MAX_YAML_NODES} nodes (aliases expanded)"),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, &span)?;
                let node = Node::Scalar {
                    value: value.into_owned(),
                    style,
                    tag: tag.map(Cow::into_owned),
                    span,
                };
                self.finish(node, anchor);
            }
            Event::SequenceStart(_, anchor, _) => {
                self.count(1, &span)?;
                self.stack.push(Open::Sequence(Vec::new(), span, anchor));
            }
            Event::MappingStart(_, anchor, _) => {
                self.count(1, &span)?;
                self.stack
                    .push(Open::Mapping(Vec::new(), None, span, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop().expect("an end follows its start") {
                    Open::Sequence(items, span, anchor) => (Node::Sequence(items, span), anchor),
                    Open::Mapping(pairs, pending, span, anchor) => {
                        assert!(pending.is_none(), "the parser gives every key a value");
                        (Node::Mapping(pairs, span), anchor)
                    }
                };
                self.finish(node, anchor);
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| error(&span, "an alias to an unknown anchor"))?;
                self.count(count(&node), &span)?;
                self.finish(node, 0);
            }
            _ => {}
        }
        Ok(())
    }

    /// A complete node: remembered under its anchor, then added to its parent.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Sequence(items, ..)) => items.push(node),
            Some(Open::Mapping(pairs, pending, ..)) => match pending.take() {
                Some(key) => pairs.push((*key, node)),
                None => *pending = Some(Box::new(node)),
            },
        }
    }
}

fn count(node: &Node) -> usize {
    match node {
        Node::Scalar { .. } => 1,
        Node::Sequence(items, _) => 1 + items.iter().map(count).sum::<usize>(),
        Node::Mapping(pairs, _) => {
            1 + pairs
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

/// A scalar as go-yaml v2 resolves it.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Merge,
}

/// The core-schema suffix of a `tag:yaml.org,2002:` tag (`str`, `int`, ...), `None` for others.
fn core_tag(tag: &Tag) -> Option<String> {
    tag.suffix_in_namespace("tag:yaml.org,2002:")
        .map(Cow::into_owned)
}

/// go-yaml v2's `resolve` for a plain scalar without a tag.
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Scalar::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false);
        }
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        "<<" => return Scalar::Merge,
        _ => {}
    }
    match text.as_bytes()[0] {
        b'.' => {
            if let Some(f) = go_parse_float(text) {
                return Scalar::Float(f);
            }
        }
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = text.replace('_', "");
            if let Some(i) = go_parse_int(&plain) {
                return Scalar::Int(i);
            }
            if let Some(u) = go_parse_uint(&plain) {
                return Scalar::Uint(u);
            }
            if let Some(f) = go_parse_float(&plain) {
                return Scalar::Float(f);
            }
            if let Some(digits) = plain.strip_prefix("-0b")
                && let Ok(i) = i64::from_str_radix(&format!("-{digits}"), 2)
            {
                return Scalar::Int(i);
            }
            // Integers beyond 64 bits become a big.Int in go-yaml; here, the nearest float.
            if is_go_integer_literal(&plain)
                && let Ok(f) = plain.parse::<f64>()
            {
                return Scalar::Float(f);
            }
        }
        _ => {}
    }
    Scalar::Str(text.to_string())
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// The sign and the rest of a Go integer literal.
fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// Radix and digits as Go's `strconv.ParseInt(s, 0, ...)` reads a literal without its sign:
/// `0x`/`0X` hex, `0o`/`0O` octal, `0b`/`0B` binary, a leading `0` octal, else decimal.
fn radix(s: &str) -> (u32, &str) {
    let lower = s.get(..2).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("0x") => (16, &s[2..]),
        Some("0o") => (8, &s[2..]),
        Some("0b") => (2, &s[2..]),
        _ if s.len() > 1 && s.starts_with('0') => (8, &s[1..]),
        _ => (10, s),
    }
}

fn go_parse_uint_unsigned(s: &str) -> Option<u64> {
    let (radix, digits) = radix(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)` (underscores already removed).
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, rest) = split_sign(s);
    let magnitude = go_parse_uint_unsigned(rest)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: no sign allowed.
fn go_parse_uint(s: &str) -> Option<u64> {
    if s.starts_with(['+', '-']) {
        return None;
    }
    go_parse_uint_unsigned(s)
}

/// A decimal integer literal too large for 64 bits.
fn is_go_integer_literal(s: &str) -> bool {
    let (_, rest) = split_sign(s);
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

/// A float in go-yaml's `yamlStyleFloat` spelling (`.5`, `1e3`, `-1.5`), parsed as Go's
/// `strconv.ParseFloat(s, 64)` would.
fn go_parse_float(s: &str) -> Option<f64> {
    if yaml_style_float(s) {
        s.parse().ok()
    } else {
        None
    }
}

/// A scalar node resolved as go-yaml v2 resolves it, tags included.
fn resolve(
    value: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Scalar, YamlError> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(value)
        } else {
            Scalar::Str(value.to_string())
        });
    };
    let Some(core) = core_tag(tag) else {
        // A tag go-yaml cannot resolve (`!foo`, the non-specific `!`): the text stays a string.
        return Ok(Scalar::Str(value.to_string()));
    };
    let resolved = if value.is_empty() {
        Scalar::Null
    } else {
        resolve_plain(value)
    };
    let fits = match (core.as_str(), &resolved) {
        ("str", _) => return Ok(Scalar::Str(value.to_string())),
        ("binary", _) => {
            return Err(error(
                span,
                "!!binary is not supported (sigs.k8s.io/yaml neither): write the base64 text without the tag",
            ));
        }
        ("int", Scalar::Int(_) | Scalar::Uint(_))
        | ("float", Scalar::Float(_))
        | ("bool", Scalar::Bool(_))
        | ("null", Scalar::Null)
        | ("timestamp", Scalar::Str(_)) => true,
        ("float", Scalar::Int(i)) => return Ok(Scalar::Float(*i as f64)),
        ("float", Scalar::Uint(u)) => return Ok(Scalar::Float(*u as f64)),
        _ => false,
    };
    if fits {
        Ok(resolved)
    } else {
        Err(error(
            span,
            format!("cannot decode `{value}` as a !!{core}"),
        ))
    }
}

/// A float as Go's `encoding/json` writes it: integral values as integers.
fn float_to_json(f: f64, span: &Span) -> Result<Value, YamlError> {
    if !f.is_finite() {
        return Err(error(
            span,
            format!(
                "{f} has no JSON form (kubectl refuses it too: \"json: unsupported value\"); quote it if it is text"
            ),
        ));
    }
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        return Ok(Value::from(f as i64));
    }
    if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) {
        return Ok(Value::from(f as u64));
    }
    Ok(Value::Number(Number::from_f64(f).expect("finite")))
}

fn scalar_to_json(
    value: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Value, YamlError> {
    Ok(match resolve(value, style, tag, span)? {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::from(i),
        Scalar::Uint(u) => Value::from(u),
        Scalar::Float(f) => float_to_json(f, span)?,
        Scalar::Str(s) => Value::String(s),
        Scalar::Merge => Value::String("<<".into()),
    })
}

/// A mapping key as sigs.k8s.io/yaml turns it into a JSON key; `None` for the merge key.
fn key_to_string(key: &Node) -> Result<Option<String>, YamlError> {
    let Node::Scalar {
        value,
        style,
        tag,
        span,
    } = key
    else {
        return Err(error(key.span(), "a mapping or sequence as a mapping key"));
    };
    Ok(Some(match resolve(value, *style, tag.as_ref(), span)? {
        Scalar::Merge => return Ok(None),
        Scalar::Str(s) => s,
        Scalar::Int(i) => i.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null => {
            return Err(error(
                span,
                "a null mapping key (sigs.k8s.io/yaml refuses it)",
            ));
        }
        Scalar::Uint(_) | Scalar::Float(_) => {
            return Err(error(
                span,
                format!("the number `{value}` as a mapping key: quote it"),
            ));
        }
    }))
}

fn merge_into(map: &mut Map<String, Value>, source: &Node) -> Result<(), YamlError> {
    match source {
        Node::Mapping(..) => {
            if let Value::Object(merged) = to_json(source)? {
                map.extend(merged);
            }
            Ok(())
        }
        // go-yaml v2 merges a sequence of mappings last to first, so earlier ones win.
        Node::Sequence(items, _) => {
            for item in items.iter().rev() {
                if !matches!(item, Node::Mapping(..)) {
                    return Err(error(
                        item.span(),
                        "a merge (<<) of something other than a mapping",
                    ));
                }
                merge_into(map, item)?;
            }
            Ok(())
        }
        Node::Scalar { span, .. } => Err(error(span, "a merge (<<) of a scalar")),
    }
}

fn to_json(node: &Node) -> Result<Value, YamlError> {
    match node {
        Node::Scalar {
            value,
            style,
            tag,
            span,
        } => scalar_to_json(value, *style, tag.as_ref(), span),
        Node::Sequence(items, _) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_json(item).map_err(|e| e.within(format!("[{i}]"))))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Node::Mapping(pairs, _) => {
            let mut map = Map::new();
            let mut explicit = std::collections::HashSet::new();
            for (key, value) in pairs {
                match key_to_string(key)? {
                    None => merge_into(&mut map, value)?,
                    Some(k) => {
                        if !explicit.insert(k.clone()) {
                            return Err(error(
                                key.span(),
                                format!("the key {k:?} is given twice in one mapping"),
                            ));
                        }
                        let value = to_json(value).map_err(|e| e.within(k.clone()))?;
                        map.insert(k, value);
                    }
                }
            }
            Ok(Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let docs = documents(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(docs.len(), 1, "{text:?}");
        docs.into_iter().next().unwrap().0
    }

    /// Plain scalars, with the value go-yaml v2's resolve table (kubernetes-sigs/yaml
    /// goyaml.v2/resolve.go) and Go's encoding/json give them; this is what `kubectl apply -f`
    /// sends for `v: <spelling>`.
    #[test]
    fn scalars_resolve_as_kubectl_reads_them() {
        let table: &[(&str, Value)] = &[
            ("0644", json!(420)),
            ("0400", json!(256)),
            ("0755", json!(493)),
            ("0", json!(0)),
            ("08", json!(8)), // not octal: a float 8, written as 8
            ("0x1F", json!(31)),
            ("0X1f", json!(31)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("-0b101", json!(-5)),
            ("-0x10", json!(-16)),
            ("+12", json!(12)),
            ("1_000", json!(1000)),
            ("1_000.5", json!(1000.5)),
            ("18446744073709551615", json!(18446744073709551615u64)),
            ("1.0", json!(1)),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000)),
            (".5", json!(0.5)),
            ("-.5", json!(-0.5)),
            ("yes", json!(true)),
            ("Yes", json!(true)),
            ("YES", json!(true)),
            ("y", json!(true)),
            ("Y", json!(true)),
            ("on", json!(true)),
            ("On", json!(true)),
            ("ON", json!(true)),
            ("true", json!(true)),
            ("no", json!(false)),
            ("n", json!(false)),
            ("N", json!(false)),
            ("off", json!(false)),
            ("OFF", json!(false)),
            ("False", json!(false)),
            ("yEs", json!("yEs")), // not in the table: a string
            ("oN", json!("oN")),
            ("~", Value::Null),
            ("null", Value::Null),
            ("NULL", Value::Null),
            ("", Value::Null),
            ("2001-12-14", json!("2001-12-14")), // timestamps stay strings
            (
                "2001-12-14T21:59:43.10-05:00",
                json!("2001-12-14T21:59:43.10-05:00"),
            ),
            ("1.2.3", json!("1.2.3")),
            ("0x", json!("0x")),
            ("0xG", json!("0xG")),
            ("-x", json!("-x")),
            ("12:30", json!("12:30")), // base 60 is not supported by go-yaml v2
            ("nginx:1.27", json!("nginx:1.27")),
        ];
        for (spelling, want) in table {
            let got = one(&format!("v: {spelling}\n"));
            assert_eq!(&got["v"], want, "v: {spelling}");
        }
    }

    #[test]
    fn quoted_and_tagged_scalars_resolve_as_go_yaml_v2_does() {
        let doc = one(
            "a: '0644'\nb: \"yes\"\nc: !!str 0644\nd: !!int \"0644\"\ne: !!float 1\nf: !custom 12\n\
             g: |\n  0644\nh: !!bool \"on\"\n",
        );
        assert_eq!(
            doc,
            json!({"a": "0644", "b": "yes", "c": "0644", "d": 420, "e": 1, "f": "12", "g": "0644\n", "h": true})
        );
        let error = documents("a: !!int yes\n").unwrap_err();
        assert!(
            error.message.contains("!!int") && error.line == 1,
            "{error}"
        );
    }

    #[test]
    fn keys_become_strings_as_sigs_k8s_io_yaml_makes_them() {
        let doc = one("on: push\n1: one\n0x10: sixteen\nno: x\n\"y\": quoted\n");
        assert_eq!(
            doc,
            json!({"true": "push", "1": "one", "16": "sixteen", "false": "x", "y": "quoted"})
        );
        assert!(documents("~: x\n").unwrap_err().message.contains("null"));
    }

    #[test]
    fn non_finite_floats_are_refused_naming_the_line() {
        for spelling in [".inf", "-.Inf", ".nan", "+.INF"] {
            let error = documents(&format!("a: 1\nb: {spelling}\n")).unwrap_err();
            assert_eq!(error.line, 2, "{spelling}: {error}");
            assert_eq!(error.field, "b", "{spelling}: {error}");
            assert!(error.message.contains("JSON"), "{error}");
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_the_line() {
        let error = documents("metadata:\n  name: a\n  name: b\n").unwrap_err();
        assert_eq!(error.line, 3, "{error}");
        assert_eq!(error.field, "metadata", "{error}");
        assert!(error.message.contains("\"name\""), "{error}");
    }

    #[test]
    fn errors_name_the_field_through_mappings_and_sequences() {
        let error = documents("a:\n- x: 1\n- z: .nan\n").unwrap_err();
        assert_eq!((error.line, error.field.as_str()), (3, "a[1].z"), "{error}");
    }

    #[test]
    fn anchors_aliases_and_merge_keys_expand_as_in_go_yaml_v2() {
        let doc = one("base: &base {a: 1, b: 2}\nother: &other {b: 3, c: 4}\n\
             one: {<<: *base, b: 9}\nmany: {<<: [*base, *other]}\nlist: [*base]\n");
        assert_eq!(doc["one"], json!({"a": 1, "b": 9}));
        assert_eq!(doc["many"], json!({"a": 1, "b": 2, "c": 4}));
        assert_eq!(doc["list"], json!([{"a": 1, "b": 2}]));
    }

    #[test]
    fn documents_are_split_with_their_lines_and_syntax_errors_name_the_line() {
        let docs = documents("a: 1\n---\n---\nb: 2\n").unwrap();
        let values: Vec<&Value> = docs.iter().map(|(v, _)| v).collect();
        assert_eq!(values, [&json!({"a": 1}), &Value::Null, &json!({"b": 2})]);
        assert_eq!(docs[2].1, 4);
        let error = documents("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(error.line >= 2, "{error}");
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let error = documents(&text).unwrap_err();
        assert!(error.message.contains("nodes"), "{error}");
    }
}
