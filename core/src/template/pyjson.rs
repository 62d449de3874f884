//! `tojson` as Hugging Face's renderer defines it: Python's `json.dumps` with
//! `ensure_ascii=False` unless asked, its default separators (`", "` and `": "`; `","` between
//! items when indenting), `indent`, `separators` and `sort_keys`. Models saw tool definitions
//! written this way in training, so the prompt keeps that spelling.

use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind};

/// How to write JSON.
struct Style {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// The `tojson` filter: `value | tojson(indent=2, separators=[",", ":"], sort_keys=true,
/// ensure_ascii=false)`; `indent` may also come first, by position.
pub fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be a number or a string",
                ))
            }
        },
    };
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = Style {
        indent,
        item,
        key,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write(&json, &style, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write(value: &serde_json::Value, style: &Style, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::String(s) => write_string(s, style.ensure_ascii, out),
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separate(i, style, depth + 1, out);
                write(item, style, depth + 1, out);
            }
            close(style, depth, out);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<_> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                separate(i, style, depth + 1, out);
                write_string(k, style.ensure_ascii, out);
                out.push_str(&style.key);
                write(v, style, depth + 1, out);
            }
            close(style, depth, out);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Before item `i` of a container at `depth`: the item separator, then the indentation.
fn separate(i: usize, style: &Style, depth: usize, out: &mut String) {
    if i > 0 {
        out.push_str(&style.item);
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
}

fn close(style: &Style, depth: usize, out: &mut String) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
}

/// A JSON string as Python writes it: serde_json's escapes (the same set), and with
/// `ensure_ascii` every non-ASCII character as `\uXXXX` (UTF-16 surrogate pairs above U+FFFF).
fn write_string(s: &str, ensure_ascii: bool, out: &mut String) {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    if !ensure_ascii || quoted.is_ascii() {
        out.push_str(&quoted);
        return;
    }
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Environment;

    fn render(template: &str) -> String {
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
        let value = serde_json::json!({"name": "météo", "args": [1, 2.5, true, null], "empty": {}});
        env.render_str(template, minijinja::context! { v => value })
            .unwrap()
    }

    #[test]
    fn writes_json_as_python_json_dumps_does() {
        // Each expected text is what `json.dumps(v, ensure_ascii=False, ...)` prints.
        assert_eq!(
            render("{{ v | tojson }}"),
            r#"{"name": "météo", "args": [1, 2.5, true, null], "empty": {}}"#
        );
        assert_eq!(
            render("{{ v | tojson(ensure_ascii=True, sort_keys=True) }}"),
            r#"{"args": [1, 2.5, true, null], "empty": {}, "name": "m\u00e9t\u00e9o"}"#
        );
        assert_eq!(
            render("{{ v.args | tojson(indent=2) }}"),
            "[\n  1,\n  2.5,\n  true,\n  null\n]"
        );
        assert_eq!(
            render("{{ v | tojson(separators=[',', ':']) }}"),
            r#"{"name":"météo","args":[1,2.5,true,null],"empty":{}}"#
        );
        assert_eq!(render("{{ '<a & \"b\">' | tojson }}"), r#""<a & \"b\">""#);
    }
}
