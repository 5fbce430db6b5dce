//! Properties of the YAML reader over inputs too many to list: it never panics, whatever the
//! bytes; an integer in any spelling go-yaml v2 accepts (decimal, `0x`, `0o`, legacy `0`
//! octal, `0b`, with `_`) reads back as that integer; a quoted scalar is always the string
//! it spells.

use fleet_core::yaml::documents;
use proptest::prelude::*;
use serde_json::Value;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_read_or_refused_without_panicking(text in "(?s).{0,200}") {
        let _ = documents(&text);
    }

    #[test]
    fn yaml_shaped_text_is_read_or_refused_without_panicking(
        lines in prop::collection::vec(
            prop::sample::select(vec![
                "a: 1", "- x", "  b: [1, 2", "]", "{c: d}", "&a e: f", "*a", "<<: *a", "? k", ": v",
                "---", "...", "  - 0644", "'q", "\"d\\x\"", "!!int 3", "!!str 4", "|", "  text",
                "~: n", "on: off", "- .inf", "#c", "\t", "k: &b [*b]",
            ]),
            0..12,
        )
    ) {
        let _ = documents(&lines.join("\n"));
    }

    #[test]
    fn integers_read_back_in_every_go_spelling(n in any::<i64>(), underscore in any::<bool>()) {
        let magnitude = n.unsigned_abs();
        let sign = if n < 0 { "-" } else { "" };
        let spellings = [
            format!("{sign}{magnitude}"),
            format!("{sign}0x{magnitude:x}"),
            format!("{sign}0X{magnitude:X}"),
            format!("{sign}0o{magnitude:o}"),
            format!("{sign}0{magnitude:o}"),
            format!("{sign}0b{magnitude:b}"),
        ];
        for spelling in spellings {
            // go-yaml removes every `_` before parsing.
            let written = if underscore && spelling.len() > 3 {
                format!("{}_{}", &spelling[..3], &spelling[3..])
            } else {
                spelling.clone()
            };
            let docs = documents(&format!("v: {written}\n")).unwrap();
            prop_assert_eq!(&docs[0].0["v"], &Value::from(n), "{}", written);
        }
    }

    #[test]
    fn a_quoted_scalar_is_the_string_it_spells(text in "[ -~]{0,40}") {
        let single = format!("v: '{}'\n", text.replace('\'', "''"));
        let docs = documents(&single).unwrap();
        prop_assert_eq!(&docs[0].0["v"], &Value::String(text.clone()));
    }
}
