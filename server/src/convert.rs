//! What every API dialect converts the same way, checked once: function tools, JSON-schema
//! output formats and a message's text parts. Each dialect names its own fields (`field`), so
//! that an error points at the client's own spelling of the place.

use minerva_runtime::{Constraint, GenerationRequest, Tool};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Whether `name` is 1 to 64 ASCII letters, digits, underscores or dashes: OpenAI's rule for
/// function and schema names, applied to every dialect's.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A function tool, `field` being where the dialect keeps it (e.g. `tools[0]`): the name by
/// [`valid_name`]'s rule, the parameters a JSON schema object (absent: no parameters).
pub(crate) fn tool(
    field: &str,
    name: &str,
    description: Option<&str>,
    parameters: Option<&Value>,
    name_key: &str,
    parameters_key: &str,
) -> Result<Tool, ApiError> {
    if !valid_name(name) {
        let at = format!("{field}.{name_key}");
        return Err(ApiError::invalid(
            format!("{at} `{name}` must be 1 to 64 letters, digits, underscores or dashes"),
            Some(&at),
        ));
    }
    let parameters = parameters
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        let at = format!("{field}.{parameters_key}");
        return Err(ApiError::invalid(
            format!("{at} must be a JSON schema object"),
            Some(&at),
        ));
    }
    Ok(Tool {
        name: name.to_string(),
        description: description.map(str::to_string),
        parameters,
    })
}

/// A JSON-schema output format (`field`: where the dialect keeps it, e.g.
/// `response_format.json_schema`, in the request parameter `param`): its `name` (where the
/// dialect has one) by [`valid_name`]'s rule, the schema a JSON object or absent (any JSON
/// value), and no keys beside `description` and `strict` (which change nothing: the schema is
/// always followed exactly).
pub(crate) fn json_schema<'a>(
    param: &str,
    field: &str,
    name: Option<&str>,
    schema: Option<&Value>,
    others: impl IntoIterator<Item = &'a String>,
) -> Result<Constraint, ApiError> {
    if let Some(name) = name.filter(|name| !valid_name(name)) {
        return Err(ApiError::invalid(
            format!(
                "`{field}.name` `{name}` must be 1 to 64 letters, digits, underscores or dashes"
            ),
            Some(param),
        ));
    }
    if let Some(key) = others
        .into_iter()
        .find(|k| !["description", "strict"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            format!("unknown field `{field}.{key}`"),
            Some(param),
        ));
    }
    match schema {
        None => Ok(Constraint::JsonSchema(json!({}))),
        Some(schema) if schema.is_object() => Ok(Constraint::JsonSchema(schema.clone())),
        Some(_) => Err(ApiError::invalid(
            format!("`{field}.schema` must be a JSON schema object"),
            Some(param),
        )),
    }
}

/// The text parts of one message as its content: joined with newlines, as llama.cpp's server
/// and vLLM join them for templates that take a string.
pub(crate) fn join_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts.into_iter().collect::<Vec<_>>().join("\n")
}

/// A reasoning effort (`none`, `minimal`, `low`, `medium`, `high`) for the template: the
/// templates that take an effort (gpt-oss) read `reasoning_effort`; those that switch thinking
/// on or off (Qwen3's `enable_thinking`, DeepSeek V3.1's `thinking`) get the switch, unless the
/// request sets these itself.
pub fn reasoning_effort(
    effort: &str,
    field: &str,
    request: &mut GenerationRequest,
) -> Result<(), ApiError> {
    if !["none", "minimal", "low", "medium", "high"].contains(&effort) {
        return Err(ApiError::invalid(
            format!("`{field}` must be none, minimal, low, medium or high, got `{effort}`"),
            Some(field),
        ));
    }
    let kwargs = &mut request.chat_template_kwargs;
    kwargs
        .entry("reasoning_effort")
        .or_insert_with(|| json!(effort));
    for switch in ["enable_thinking", "thinking"] {
        kwargs
            .entry(switch)
            .or_insert_with(|| json!(effort != "none"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_follow_one_rule_and_name_the_field() {
        let ok = tool(
            "tools[0]",
            "get_weather-2",
            Some("d"),
            None,
            "name",
            "parameters",
        )
        .unwrap();
        assert_eq!(ok.name, "get_weather-2");
        assert_eq!(ok.parameters["type"], "object");
        for bad in ["", "has space", "dot.ted", &"x".repeat(65)] {
            let e = tool("tools[1].function", bad, None, None, "name", "parameters").unwrap_err();
            assert_eq!(
                e.param.as_deref(),
                Some("tools[1].function.name"),
                "{bad:?}"
            );
        }
        let e = tool(
            "tools.0",
            "f",
            None,
            Some(&json!([1])),
            "name",
            "input_schema",
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools.0.input_schema"));
    }

    #[test]
    fn json_schemas_check_name_schema_and_extra_keys() {
        let none: [&String; 0] = [];
        let field = "response_format.json_schema";
        let c = json_schema("response_format", field, Some("answer"), None, none).unwrap();
        assert_eq!(c, Constraint::JsonSchema(json!({})));
        let schema = json!({"type": "object"});
        fn format(
            name: Option<&str>,
            schema: Option<&Value>,
            others: &[String],
        ) -> Result<Constraint, ApiError> {
            json_schema("text.format", "text.format", name, schema, others)
        }
        assert_eq!(
            format(None, Some(&schema), &[]).unwrap(),
            Constraint::JsonSchema(schema)
        );
        assert!(format(Some("a b"), None, &[]).is_err());
        assert!(format(Some(""), None, &[]).is_err());
        assert!(format(None, Some(&json!("x")), &[]).is_err());
        let e = format(Some("a"), None, &["strict".into(), "nope".into()]).unwrap_err();
        assert!(e.message.contains("text.format.nope"), "{}", e.message);
        let e = json_schema("response_format", field, Some("a b"), None, none).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
    }

    #[test]
    fn parts_are_joined_with_newlines() {
        assert_eq!(join_parts(["a", "b"]), "a\nb");
        assert_eq!(join_parts(["only"]), "only");
        assert_eq!(join_parts([]), "");
    }
}
