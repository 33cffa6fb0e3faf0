//! serde's error messages without the values they quote: `invalid type: string "…",
//! expected …` would put a password written without quotes, a push token or a contact
//! URI into an error, and errors go into the log. What is wrong, which field and where
//! stay; only the value goes.

/// `message` with every value serde quotes (`string "…"`, `integer `…``, `floating
/// point `…``, `boolean `…``, `character `…``) replaced by its kind (`a string`, …).
/// Field and variant names (`unknown field `x``, `missing field `x``) stay.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = KINDS
            .iter()
            .filter_map(|kind| rest.find(kind.prefix).map(|at| (at, kind)))
            .min_by_key(|(at, _)| *at);
        let Some((at, kind)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(kind.replacement);
        let value = &rest[at + kind.prefix.len()..];
        rest = match kind.close {
            '"' => after_quoted(value),
            close => value.find(close).map_or("", |end| &value[end + 1..]),
        };
    }
}

/// One kind of quoted value: how it starts, what ends it, what stands for it.
struct Kind {
    prefix: &'static str,
    close: char,
    replacement: &'static str,
}

const KINDS: &[Kind] = &[
    Kind {
        prefix: "string \"",
        close: '"',
        replacement: "a string",
    },
    Kind {
        prefix: "integer `",
        close: '`',
        replacement: "an integer",
    },
    Kind {
        prefix: "floating point `",
        close: '`',
        replacement: "a floating point number",
    },
    Kind {
        prefix: "boolean `",
        close: '`',
        replacement: "a boolean",
    },
    Kind {
        prefix: "character `",
        close: '`',
        replacement: "a character",
    },
];

/// What follows a string written with Rust's escapes (`{:?}`), whose opening `"` is
/// already behind: the text after the first `"` no backslash escapes.
fn after_quoted(value: &str) -> &str {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return &value[i + 1..],
            _ => escaped = false,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_and_names_stay() {
        assert_eq!(
            without_values(
                r#"invalid type: string "sip:1@h;pn-prid=5ecre7\"x", expected struct ContactInfo at line 1"#
            ),
            "invalid type: a string, expected struct ContactInfo at line 1"
        );
        assert_eq!(
            without_values("invalid type: integer `123456`, expected a string"),
            "invalid type: an integer, expected a string"
        );
        assert_eq!(
            without_values("invalid value: floating point `1.5`, expected u16; boolean `true`"),
            "invalid value: a floating point number, expected u16; a boolean"
        );
        assert_eq!(
            without_values("unknown field `colour`, expected one of `platform`, `token`"),
            "unknown field `colour`, expected one of `platform`, `token`"
        );
        assert_eq!(
            without_values("invalid type: string \"unclosed"),
            "invalid type: a string"
        );
        assert_eq!(without_values(""), "");
    }
}
