//! Python's `repr` of template values: lm-eval's Jinja2 prints a list or dict the way Python
//! does (`['a', 'b']`, `{'k': 1}`, `True`, `None`, `7.0`), and task files rely on it (a rendered
//! list is read back with `ast.literal_eval`).

use minijinja::value::{Value, ValueKind};

/// Python's quoting of a string: single quotes unless the text holds `'` and no `"`.
fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr(value)` as Python prints it inside a container.
pub fn repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::String => repr_str(v.as_str().unwrap_or_default()),
        ValueKind::Number => match f64::try_from(v.clone()) {
            // A float prints with a fraction (7.0); an integer without.
            Ok(f)
                if v.as_i64().is_none() && f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 =>
            {
                format!("{f:.1}")
            }
            _ => v.to_string(),
        },
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = v
                .try_iter()
                .into_iter()
                .flatten()
                .map(|x| repr(&x))
                .collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = v
                .try_iter()
                .into_iter()
                .flatten()
                .map(|k| {
                    let val = v.get_item(&k).unwrap_or_default();
                    format!("{}: {}", repr(&k), repr(&val))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    }
}

/// How a value prints in a template: containers as Python's repr, the rest as minijinja does.
pub fn formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => out
            .write_str(&repr(value))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_of_strings_and_containers() {
        // Python: repr("it's") == "\"it's\"", repr('a"b') == "'a\"b'", repr('a\nb') == "'a\\nb'".
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a\"b"), "'a\"b'");
        assert_eq!(repr_str("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(repr_str("both ' and \""), "'both \\' and \"'");
        let v =
            Value::from_serialize(serde_json::json!([1, 2.5, 7.0, null, true, "x", {"k": [1]}]));
        assert_eq!(repr(&v), "[1, 2.5, 7.0, None, True, 'x', {'k': [1]}]");
    }
}
