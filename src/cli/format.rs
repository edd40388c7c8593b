//! `--format`: the Go-template subset Docker users write, over JSON values:
//! `{{.Field.Sub}}`, `{{.}}`, `{{json .X}}`, `{{range .X}}…{{else}}…{{end}}`,
//! `{{if}}`/`{{with}}`/`{{else}}`, `{{- -}}` trimming, pipes (`{{.X | upper}}`),
//! string and number literals, the functions `json join split upper lower
//! title len index print println printf eq ne not and or truncate`, and
//! Docker's `table` prefix and `json` shorthand. gtmpl, the one Rust crate of
//! Go's template language, has had no release since 2021 and reads its own
//! value type; this evaluator works on serde_json values directly.

use serde_json::Value;

/// A parse or evaluation error, as the user's template caused it.
#[derive(Debug, thiserror::Error)]
#[error("template {template:?}: {reason}")]
pub struct FormatError {
    template: String,
    reason: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

/// Commands joined by `|`: each one's result is the last argument of the next.
type Pipeline = Vec<Vec<Arg>>;

#[derive(Clone, Debug, PartialEq)]
enum Arg {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Pipeline),
}

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
    source: String,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, FormatError> {
        let err = |reason: String| FormatError { template: source.to_string(), reason };
        let tokens = lex(source).map_err(err)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos).map_err(err)?;
        if let Some(end) = end {
            return Err(err(format!("unexpected {{{{{end}}}}}")));
        }
        Ok(Template { nodes, source: source.to_string() })
    }

    /// Renders the template for `data`.
    pub fn render(&self, data: &Value) -> Result<String, FormatError> {
        let mut out = String::new();
        render(&self.nodes, data, &mut out).map_err(|reason| FormatError { template: self.source.clone(), reason })?;
        Ok(out)
    }
}

enum Token {
    Text(String),
    Action(String),
}

fn lex(source: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed action")?;
        let mut action = &after[..end];
        if let Some(trimmed) = action.strip_prefix("- ").or_else(|| (action == "-").then_some("")) {
            text = text.trim_end().to_string();
            action = trimmed;
        }
        let mut trim_next = false;
        if let Some(trimmed) = action.strip_suffix(" -") {
            action = trimmed;
            trim_next = true;
        }
        tokens.push(Token::Text(text));
        tokens.push(Token::Action(action.trim().to_string()));
        rest = &after[end + 2..];
        if trim_next {
            rest = rest.trim_start();
        }
    }
    tokens.push(Token::Text(rest.to_string()));
    Ok(tokens)
}

/// Nodes up to an `else` or `end`, which is returned.
fn parse_nodes(tokens: &[Token], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let token = &tokens[*pos];
        *pos += 1;
        match token {
            Token::Text(text) if !text.is_empty() => nodes.push(Node::Text(text.clone())),
            Token::Text(_) => {}
            Token::Action(action) => {
                let (word, rest) = action.split_once(char::is_whitespace).unwrap_or((action.as_str(), ""));
                match word {
                    "end" | "else" => return Ok((nodes, Some(word.to_string()))),
                    "if" | "with" | "range" => {
                        let pipeline = parse_pipeline(rest)?;
                        let (body, end) = parse_nodes(tokens, pos)?;
                        let otherwise = match end.as_deref() {
                            Some("else") => match parse_nodes(tokens, pos)? {
                                (nodes, Some(end)) if end == "end" => nodes,
                                _ => return Err(format!("{{{{{word}}}}} without {{{{end}}}}")),
                            },
                            Some("end") => Vec::new(),
                            _ => return Err(format!("{{{{{word}}}}} without {{{{end}}}}")),
                        };
                        nodes.push(match word {
                            "if" => Node::If(pipeline, body, otherwise),
                            "with" => Node::With(pipeline, body, otherwise),
                            _ => Node::Range(pipeline, body, otherwise),
                        });
                    }
                    _ if action.starts_with("/*") => {}
                    _ => nodes.push(Node::Action(parse_pipeline(action)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let mut chars = text.chars().peekable();
    let pipeline = parse_commands(&mut chars, false)?;
    if pipeline.iter().any(Vec::is_empty) {
        return Err(format!("empty command in {text:?}"));
    }
    Ok(pipeline)
}

fn parse_commands(chars: &mut std::iter::Peekable<std::str::Chars>, nested: bool) -> Result<Pipeline, String> {
    let mut pipeline = vec![Vec::new()];
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '|' => {
                chars.next();
                pipeline.push(Vec::new());
            }
            ')' if nested => {
                chars.next();
                return Ok(pipeline);
            }
            '(' => {
                chars.next();
                let sub = parse_commands(chars, true)?;
                push(&mut pipeline, Arg::Sub(sub));
            }
            '"' | '`' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some('n') => text.push('\n'),
                            Some('t') => text.push('\t'),
                            Some(other) => text.push(other),
                            None => return Err("unterminated string".into()),
                        },
                        Some(other) => text.push(other),
                    }
                }
                push(&mut pipeline, Arg::Str(text));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "|()\"".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                let arg = if let Some(path) = word.strip_prefix('.') {
                    Arg::Field(if path.is_empty() { Vec::new() } else { path.split('.').map(str::to_string).collect() })
                } else if word == "true" || word == "false" {
                    Arg::Bool(word == "true")
                } else if let Ok(n) = word.parse::<f64>() {
                    Arg::Num(n)
                } else if word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Arg::Func(word)
                } else {
                    return Err(format!("unexpected {word:?}"));
                };
                push(&mut pipeline, arg);
            }
        }
    }
    if nested {
        return Err("unclosed (".into());
    }
    Ok(pipeline)
}

fn push(pipeline: &mut Pipeline, arg: Arg) {
    if let Some(last) = pipeline.last_mut() {
        last.push(arg);
    }
}

fn render(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipeline) => out.push_str(&text_of(&eval_pipeline(pipeline, dot)?)),
            Node::If(pipeline, body, otherwise) => {
                let value = eval_pipeline(pipeline, dot)?;
                render(if truthy(&value) { body } else { otherwise }, dot, out)?;
            }
            Node::With(pipeline, body, otherwise) => {
                let value = eval_pipeline(pipeline, dot)?;
                if truthy(&value) { render(body, &value, out)? } else { render(otherwise, dot, out)? }
            }
            Node::Range(pipeline, body, otherwise) => {
                let items: Vec<Value> = match eval_pipeline(pipeline, dot)? {
                    Value::Array(items) => items,
                    Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => return Err(format!("range over {}", text_of(&other))),
                };
                if items.is_empty() {
                    render(otherwise, dot, out)?;
                }
                for item in &items {
                    render(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(pipeline: &Pipeline, dot: &Value) -> Result<Value, String> {
    let mut last: Option<Value> = None;
    for command in pipeline {
        last = Some(eval_command(command, dot, last)?);
    }
    Ok(last.unwrap_or(Value::Null))
}

fn eval_command(command: &[Arg], dot: &Value, piped: Option<Value>) -> Result<Value, String> {
    let (first, rest) = command.split_first().ok_or("empty command")?;
    if let Arg::Func(name) = first {
        let mut args = rest.iter().map(|a| eval_arg(a, dot)).collect::<Result<Vec<_>, _>>()?;
        args.extend(piped);
        return call(name, &args);
    }
    if !rest.is_empty() || piped.is_some() {
        return Err(format!("{first:?} is not a function"));
    }
    eval_arg(first, dot)
}

fn eval_arg(arg: &Arg, dot: &Value) -> Result<Value, String> {
    Ok(match arg {
        Arg::Field(path) => {
            let mut value = dot;
            for name in path {
                value = match value {
                    Value::Object(map) => map.get(name).unwrap_or(&Value::Null),
                    Value::Null => &Value::Null,
                    other => return Err(format!("can't evaluate field {name} in {}", kind(other))),
                };
            }
            value.clone()
        }
        Arg::Str(text) => Value::String(text.clone()),
        Arg::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => Value::from(*n as i64),
        Arg::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Func(name) => call(name, &[])?,
        Arg::Sub(pipeline) => eval_pipeline(pipeline, dot)?,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's text/template prints it.
fn text_of(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(text_of).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => format!("map[{}]", map.iter().map(|(k, v)| format!("{k}:{}", text_of(v))).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    let arity = |n: usize| if args.len() == n { Ok(()) } else { Err(format!("{name} takes {n} arguments, got {}", args.len())) };
    let text = |i: usize| args.get(i).map(text_of).unwrap_or_default();
    Ok(match name {
        "json" => {
            arity(1)?;
            Value::String(serde_json::to_string(&args[0]).unwrap_or_default())
        }
        "join" => {
            arity(2)?;
            match &args[0] {
                Value::Array(items) => Value::String(items.iter().map(text_of).collect::<Vec<_>>().join(&text(1))),
                other => Value::String(text_of(other)),
            }
        }
        "split" => {
            arity(2)?;
            Value::Array(text(0).split(&text(1)).map(|s| Value::String(s.to_string())).collect())
        }
        "upper" => Value::String(text(0).to_uppercase()),
        "lower" => Value::String(text(0).to_lowercase()),
        "title" => Value::String(
            text(0)
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
                })
                .collect::<Vec<String>>()
                .join(" "),
        ),
        "len" => {
            arity(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.len(),
                other => return Err(format!("len of {}", kind(other))),
            })
        }
        "index" => {
            let (first, keys) = args.split_first().ok_or("index needs arguments")?;
            let mut value = first.clone();
            for key in keys {
                value = match (&value, key) {
                    (Value::Array(a), Value::Number(n)) => {
                        n.as_u64().and_then(|i| a.get(i as usize)).cloned().ok_or("index out of range")?
                    }
                    (Value::Object(m), key) => m.get(&text_of(key)).cloned().unwrap_or(Value::Null),
                    _ => return Err(format!("can't index {}", kind(&value))),
                };
            }
            value
        }
        "truncate" => {
            arity(2)?;
            let n = args[1].as_u64().unwrap_or(0) as usize;
            Value::String(text(0).chars().take(n).collect())
        }
        "print" => Value::String(args.iter().map(text_of).collect::<Vec<_>>().join("")),
        "println" => Value::String(args.iter().map(text_of).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => {
            let (format, rest) = args.split_first().ok_or("printf needs a format")?;
            let mut out = String::new();
            let mut rest = rest.iter();
            let mut chars = text_of(format).chars().collect::<Vec<_>>().into_iter();
            while let Some(c) = chars.next() {
                match (c, c == '%') {
                    (_, true) => match chars.next() {
                        Some('%') => out.push('%'),
                        Some('q') => out.push_str(&format!("{:?}", rest.next().map(text_of).unwrap_or_default())),
                        Some(_) => out.push_str(&rest.next().map(text_of).unwrap_or_default()),
                        None => out.push('%'),
                    },
                    (c, false) => out.push(c),
                }
            }
            Value::String(out)
        }
        "eq" => {
            let (first, rest) = args.split_first().ok_or("eq needs arguments")?;
            Value::Bool(rest.iter().any(|v| v == first || text_of(v) == text_of(first)))
        }
        "ne" => {
            arity(2)?;
            Value::Bool(args[0] != args[1] && text_of(&args[0]) != text_of(&args[1]))
        }
        "not" => {
            arity(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "and" => args.iter().find(|v| !truthy(v)).or(args.last()).cloned().unwrap_or(Value::Null),
        "or" => args.iter().find(|v| truthy(v)).or(args.last()).cloned().unwrap_or(Value::Null),
        _ => return Err(format!("function {name:?} not defined")),
    })
}

/// Prints `rows` with a `--format` value: `json` (one JSON object a line),
/// `table TEMPLATE` (aligned, with a header naming each field by `headers`),
/// or a template rendered once per row.
pub fn print_rows(format: &str, rows: &[Value], headers: &[(&str, &str)]) -> Result<(), FormatError> {
    if format == "json" {
        for row in rows {
            println!("{}", serde_json::to_string(row).unwrap_or_default());
        }
        return Ok(());
    }
    if let Some(body) = format.strip_prefix("table") {
        let body = body.trim_start();
        let template = Template::parse(&body.replace("\\t", "\t"))?;
        let header = table_header(body, headers);
        let mut lines = vec![header];
        for row in rows {
            lines.push(template.render(row)?);
        }
        let mut table: Option<super::table::Table> = None;
        for line in lines {
            let cells: Vec<String> = line.split('\t').map(str::to_string).collect();
            match &mut table {
                None => table = Some(super::table::Table::new(&cells.iter().map(String::as_str).collect::<Vec<_>>())),
                Some(t) => t.row(cells),
            }
        }
        if let Some(table) = table {
            table.print();
        }
        return Ok(());
    }
    let template = Template::parse(&format.replace("\\t", "\t").replace("\\n", "\n"))?;
    for row in rows {
        println!("{}", template.render(row)?);
    }
    Ok(())
}

/// The header of a `table` format: each `{{.Field}}` by its column name, the text between kept.
fn table_header(body: &str, headers: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = body.replace("\\t", "\t");
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else { break };
        let action = rest[start + 2..start + end].trim_matches(|c: char| c == '-' || c.is_whitespace()).to_string();
        let field = action.rsplit([' ', '.']).next().unwrap_or("");
        let name = headers.iter().find(|(f, _)| *f == field).map(|(_, h)| h.to_string()).unwrap_or_else(|| field.to_uppercase());
        out.push_str(&name);
        rest = rest[start + end + 2..].to_string();
    }
    out.push_str(&rest);
    out
}

/// Renders `format` once for one value (`inspect -f`).
pub fn render_one(format: &str, value: &Value) -> Result<String, FormatError> {
    Template::parse(&format.replace("\\t", "\t").replace("\\n", "\n"))?.render(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(template: &str, data: Value) -> String {
        Template::parse(template).and_then(|t| t.render(&data)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fields_pipes_and_functions() {
        let data = json!({"ID": "abc", "Repository": "web", "Tag": "1", "Config": {"Env": ["A=1", "B=2"], "Cmd": null}, "N": 3});
        assert_eq!(r("{{.Repository}}:{{.Tag}}", data.clone()), "web:1");
        assert_eq!(r("{{json .Config.Env}}", data.clone()), r#"["A=1","B=2"]"#);
        assert_eq!(r("{{json .Config}}", data.clone()), r#"{"Cmd":null,"Env":["A=1","B=2"]}"#);
        assert_eq!(r("{{.Repository | upper}}", data.clone()), "WEB");
        assert_eq!(r("{{join .Config.Env \",\"}}", data.clone()), "A=1,B=2");
        assert_eq!(r("{{len .Config.Env}} {{index .Config.Env 1}}", data.clone()), "2 B=2");
        assert_eq!(r("{{.Missing}}", data.clone()), "<no value>");
        assert_eq!(r("{{.Config.Env}}", data.clone()), "[A=1 B=2]");
        assert_eq!(r("{{printf \"%s-%d\" .ID .N}}", data.clone()), "abc-3");
        assert_eq!(r("{{lower (upper .ID)}}", data), "abc");
    }

    #[test]
    fn range_if_with_and_trimming() {
        let data = json!({"Layers": ["a", "b"], "Empty": [], "On": true, "Obj": {"K": "v"}});
        assert_eq!(r("{{range .Layers}}<{{.}}>{{end}}", data.clone()), "<a><b>");
        assert_eq!(r("{{range .Empty}}x{{else}}none{{end}}", data.clone()), "none");
        assert_eq!(r("{{if .On}}yes{{else}}no{{end}} {{if .Empty}}yes{{else}}no{{end}}", data.clone()), "yes no");
        assert_eq!(r("{{with .Obj}}{{.K}}{{end}}", data.clone()), "v");
        assert_eq!(r("a  {{- .Obj.K -}}  b", data.clone()), "avb");
        assert_eq!(r("{{if eq .Obj.K \"v\"}}same{{end}}", data), "same");
    }

    #[test]
    fn errors_name_the_template() {
        assert!(Template::parse("{{.A").is_err());
        assert!(Template::parse("{{range .A}}x").is_err());
        let err = Template::parse("{{nosuch .A}}").and_then(|t| t.render(&json!({}))).expect_err("unknown function");
        assert!(err.to_string().contains("nosuch"), "{err}");
    }

    #[test]
    fn table_headers_name_the_fields() {
        assert_eq!(table_header("{{.ID}}\\t{{.Repository}}", &[("ID", "IMAGE ID")]), "IMAGE ID\tREPOSITORY");
    }
}
