//! What real templates use beyond the Jinja minijinja renders, rewritten into what it does.
//! Each rewrite keeps the template's whitespace control, so the text is the same as Hugging
//! Face's renderer (or llama.cpp's, where Hugging Face's cannot render it) gives.
//! - `{% generation %}...{% endgeneration %}` (transformers' marker of assistant text for training
//!   masks; LFM2.5, Laguna): an `{% if true %}` block.
//! - `{% set _ = ns.items.append(x) %}` and `{% set x = ns.items.pop(0) %}` on a namespace's
//!   list (Kimi K2): minijinja's lists are values, so `{% set ns.items = ns.items + [x] %}` and
//!   `{% set x = ns.items[0] %}{% set ns.items = ns.items[1:] %}`.

/// `source` with the rewrites above.
pub fn rewrite(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start..start + len + 2];
        out.push_str(&rest[..start]);
        out.push_str(&rewrite_tag(tag).unwrap_or_else(|| tag.to_string()));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The rewrite of one `{% ... %}` tag, if it needs one.
fn rewrite_tag(tag: &str) -> Option<String> {
    let inner = &tag[2..tag.len() - 2];
    let open = if inner.starts_with(['-', '+']) {
        &inner[..1]
    } else {
        ""
    };
    let close = if inner.ends_with(['-', '+']) {
        &inner[inner.len() - 1..]
    } else {
        ""
    };
    let body = inner[open.len()..inner.len() - close.len()].trim();
    let statement = match body {
        "generation" => "if true".to_string(),
        "endgeneration" => "endif".to_string(),
        _ => {
            let (name, value) = body.strip_prefix("set ")?.split_once('=')?;
            let (list, call) = value.trim().strip_suffix(')')?.split_once('(')?;
            let (list, method) = list.trim().rsplit_once('.')?;
            // Only a namespace's attribute: a plain variable set in a loop would not outlive it.
            let is_path = list.contains('.')
                && list
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            match method {
                "append" if is_path => format!("set {list} = ({list} + [{}]) | list", call.trim()),
                "pop" if is_path && call.trim() == "0" => format!(
                    "set {} = {list}[0] {close}%}}{{%{open} set {list} = {list}[1:]",
                    name.trim()
                ),
                _ => return None,
            }
        }
    };
    Some(format!("{{%{open} {statement} {close}%}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keep_whitespace_control_and_leave_the_rest() {
        assert_eq!(
            rewrite("a{%- generation -%}b{% endgeneration %}c"),
            "a{%- if true -%}b{% endif %}c"
        );
        assert_eq!(
            rewrite("{%- set _ = q.ids.append(formatted_id) -%}"),
            "{%- set q.ids = (q.ids + [formatted_id]) | list -%}"
        );
        assert_eq!(
            rewrite("{%- set id = q.ids.pop(0) -%}"),
            "{%- set id = q.ids[0] -%}{%- set q.ids = q.ids[1:] -%}"
        );
        let untouched = "{% set x = items.append(1) %}{% if a %}{{ b }}{% endif %}";
        assert_eq!(rewrite(untouched), untouched);
    }
}
