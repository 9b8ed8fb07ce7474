//! `-o go-template --template '...'`: a subset of Go's `text/template` run over the
//! JSON document `-o json` prints, as crictl runs its templates (keys missing from the
//! data are an error, crictl's `missingkey=error`).
//!
//! The subset (docs/crustctl.md): text; `{{ pipeline }}`; `{{- ` and ` -}}` trimming;
//! `{{/* comments */}}`; field paths `.`, `.a.b`, `$`, `$.a`; string, number and
//! boolean literals; `if`/`else if`/`else`, `range` (lists, and maps by sorted key) with
//! `else`, `with` with `else`, each closed by `end`; pipes `a | f`; the functions
//! crictl adds (`json`, `title`, `lower`, `upper`) and `len`, `index`, `not`, `eq`,
//! `ne`, `and`, `or`, `printf` with `%s`, `%d`, `%v` and `%%` only. No variables other
//! than `$`, no parentheses, no `define`/`template`/`block`.

use std::fmt::Write as _;

use serde_json::Value;

/// A template that could not be parsed or run, with what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// A field path from the dot (`root` false) or from `$`.
    Field {
        root: bool,
        path: Vec<String>,
    },
    Lit(Value),
    Func(String),
}

type Pipeline = Vec<Vec<Arg>>;

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug)]
pub struct Template(Vec<Node>);

/// One piece of the source: text, or the inside of an action.
enum Piece {
    Text(String),
    Action(String),
}

fn split(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let (trim_left, after) = match after.strip_prefix("- ") {
            Some(a) => (true, a),
            None => (false, after),
        };
        if trim_left {
            text = text.trim_end();
        }
        pieces.push(Piece::Text(text.to_string()));
        let end = find_close(after).ok_or_else(|| TemplateError("unclosed action".into()))?;
        let mut inner = &after[..end];
        trim_next = false;
        if let Some(i) = inner.strip_suffix(" -") {
            inner = i;
            trim_next = true;
        }
        pieces.push(Piece::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece::Text(text.to_string()));
    Ok(pieces)
}

/// The `}}` ending an action, outside string literals.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut i, mut quote) = (0, None);
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(b'"'), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'"' | b'`') => quote = Some(bytes[i]),
            (None, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn words(action: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            let mut word = String::from(c);
            chars.next();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                word.push(ch);
                if ch == '\\' && c == '"' {
                    if let Some(e) = chars.next() {
                        word.push(e);
                    }
                } else if ch == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return err(format!("unterminated string in {action:?}"));
            }
            out.push(word);
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '|' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

fn unquote(word: &str) -> Result<String, TemplateError> {
    if let Some(raw) = word.strip_prefix('`') {
        return Ok(raw.trim_end_matches('`').to_string());
    }
    let inner = &word[1..word.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            other => return err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

fn arg(word: &str) -> Result<Arg, TemplateError> {
    let field = |root: bool, rest: &str| Arg::Field {
        root,
        path: rest
            .split('.')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    Ok(match word {
        "true" => Arg::Lit(Value::Bool(true)),
        "false" => Arg::Lit(Value::Bool(false)),
        "nil" => Arg::Lit(Value::Null),
        w if w.starts_with('"') || w.starts_with('`') => Arg::Lit(Value::String(unquote(w)?)),
        "$" => field(true, ""),
        w if w.starts_with("$.") => field(true, &w[1..]),
        w if w.starts_with('$') => return err(format!("variables ({w}) are not supported")),
        w if w.starts_with('.') => field(false, w),
        w if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            Arg::Lit(serde_json::from_str(w).map_err(|_| TemplateError(format!("bad number {w}")))?)
        }
        w if w.starts_with('(') => return err("parentheses are not supported"),
        w => Arg::Func(w.to_string()),
    })
}

fn pipeline(words: &[String]) -> Result<Pipeline, TemplateError> {
    if words.is_empty() {
        return err("empty pipeline");
    }
    let mut out = Vec::new();
    for cmd in words.split(|w| w == "|") {
        if cmd.is_empty() {
            return err("empty command in pipeline");
        }
        out.push(cmd.iter().map(|w| arg(w)).collect::<Result<_, _>>()?);
    }
    Ok(out)
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End,
    Else(Vec<String>),
}

fn nodes(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut out = Vec::new();
    while let Some(piece) = pieces.next() {
        let action = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    out.push(Node::Text(t));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        if action.starts_with("/*") {
            continue;
        }
        let w = words(&action)?;
        let Some(first) = w.first() else {
            return err("empty action {{}}");
        };
        match first.as_str() {
            "end" => return Ok((out, Stop::End)),
            "else" => return Ok((out, Stop::Else(w[1..].to_vec()))),
            "if" | "range" | "with" => out.push(block(first, &w[1..], pieces)?),
            "define" | "template" | "block" => {
                return err(format!("{first} is not supported"));
            }
            _ => out.push(Node::Print(pipeline(&w)?)),
        }
    }
    Ok((out, Stop::Eof))
}

fn block(
    keyword: &str,
    words: &[String],
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<Node, TemplateError> {
    let pipe = pipeline(words)?;
    let (body, stop) = nodes(pieces)?;
    let otherwise = match stop {
        Stop::Eof => return err(format!("{keyword} without end")),
        Stop::End => Vec::new(),
        Stop::Else(rest) if rest.is_empty() => match nodes(pieces)? {
            (els, Stop::End) => els,
            _ => return err(format!("{keyword} ... else without end")),
        },
        // `else if X` is `else` holding an `if X` that shares the `end`.
        Stop::Else(rest) if rest[0] == "if" && keyword == "if" => {
            vec![block("if", &rest[1..], pieces)?]
        }
        Stop::Else(rest) => return err(format!("unexpected else {}", rest.join(" "))),
    };
    Ok(match keyword {
        "if" => Node::If(pipe, body, otherwise),
        "range" => Node::Range(pipe, body, otherwise),
        _ => Node::With(pipe, body, otherwise),
    })
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut pieces = split(src)?.into_iter().peekable();
        match nodes(&mut pieces)? {
            (n, Stop::Eof) => Ok(Template(n)),
            (_, Stop::End) => err("unexpected end"),
            (_, Stop::Else(_)) => err("unexpected else"),
        }
    }

    /// Runs the template over `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        run(&self.0, data, data, &mut out)?;
        Ok(out)
    }
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `fmt.Print`'s text of a value decoded from JSON: maps as `map[k:v]`, lists as `[a b]`.
fn print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<_> = o.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", print(&o[*k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn run(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(p) => out.push_str(&print(&eval(p, dot, root)?)),
            Node::If(p, yes, no) => {
                let branch = if truthy(&eval(p, dot, root)?) {
                    yes
                } else {
                    no
                };
                run(branch, dot, root, out)?;
            }
            Node::With(p, yes, no) => {
                let v = eval(p, dot, root)?;
                if truthy(&v) {
                    run(yes, &v, root, out)?;
                } else {
                    run(no, dot, root, out)?;
                }
            }
            Node::Range(p, body, empty) => {
                let items: Vec<Value> = match eval(p, dot, root)? {
                    Value::Array(a) => a,
                    Value::Object(o) => {
                        let mut entries: Vec<_> = o.into_iter().collect();
                        entries.sort_by(|a, b| a.0.cmp(&b.0));
                        entries.into_iter().map(|(_, v)| v).collect()
                    }
                    Value::Null => Vec::new(),
                    other => return err(format!("range can't iterate over {}", print(&other))),
                };
                if items.is_empty() {
                    run(empty, dot, root, out)?;
                }
                for item in &items {
                    run(body, item, root, out)?;
                }
            }
        }
    }
    Ok(())
}

fn field(base: &Value, path: &[String]) -> Result<Value, TemplateError> {
    let mut v = base;
    for (i, key) in path.iter().enumerate() {
        v = match v {
            Value::Object(o) => o.get(key).ok_or_else(|| {
                TemplateError(format!(
                    "map has no entry for key {key:?} (at .{})",
                    path[..=i].join(".")
                ))
            })?,
            Value::Null => return Ok(Value::Null),
            other => {
                return err(format!("can't evaluate field {key} in {}", print(other)));
            }
        };
    }
    Ok(v.clone())
}

fn eval(p: &Pipeline, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    let mut last: Option<Value> = None;
    for cmd in p {
        last = Some(command(cmd, last.take(), dot, root)?);
    }
    Ok(last.unwrap_or(Value::Null))
}

fn command(
    cmd: &[Arg],
    piped: Option<Value>,
    dot: &Value,
    root: &Value,
) -> Result<Value, TemplateError> {
    let value = |a: &Arg| -> Result<Value, TemplateError> {
        match a {
            Arg::Field { root: true, path } => field(root, path),
            Arg::Field { root: false, path } => field(dot, path),
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func(f) => err(format!("{f} is not a value (functions come first)")),
        }
    };
    let (name, rest) = match &cmd[0] {
        Arg::Func(f) => (f.as_str(), &cmd[1..]),
        first => {
            if cmd.len() > 1 || piped.is_some() {
                return err("only a function takes arguments");
            }
            return value(first);
        }
    };
    let mut args: Vec<Value> = rest.iter().map(value).collect::<Result<_, _>>()?;
    args.extend(piped);
    let one = |args: &[Value]| -> Result<Value, TemplateError> {
        match args {
            [v] => Ok(v.clone()),
            _ => err(format!("{name} takes one argument, got {}", args.len())),
        }
    };
    let text = |args: &[Value]| one(args).map(|v| print(&v));
    Ok(match name {
        "json" => {
            // Go's json.Encoder ends with a newline.
            let mut s = serde_json::to_string(&one(&args)?).expect("a JSON value serializes");
            s.push('\n');
            Value::String(s)
        }
        "lower" => Value::String(text(&args)?.to_lowercase()),
        "upper" => Value::String(text(&args)?.to_uppercase()),
        "title" => Value::String(title(&text(&args)?)),
        "len" => Value::from(match one(&args)? {
            Value::String(s) => s.len(),
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            other => return err(format!("len of {}", print(&other))),
        }),
        "not" => Value::Bool(!truthy(&one(&args)?)),
        "and" => args
            .iter()
            .find(|v| !truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|v| truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "eq" | "ne" => {
            let [a, rest @ ..] = args.as_slice() else {
                return err(format!("{name} needs two arguments"));
            };
            if rest.is_empty() {
                return err(format!("{name} needs two arguments"));
            }
            let equal = rest.iter().any(|b| a == b);
            Value::Bool(if name == "eq" { equal } else { !equal })
        }
        "index" => {
            let [base, keys @ ..] = args.as_slice() else {
                return err("index needs an argument");
            };
            let mut v = base.clone();
            for k in keys {
                v = match (&v, k) {
                    (Value::Object(o), Value::String(s)) => o
                        .get(s)
                        .cloned()
                        .ok_or_else(|| TemplateError(format!("map has no entry for key {s:?}")))?,
                    (Value::Array(a), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|i| a.get(usize::try_from(i).ok()?))
                        .cloned()
                        .ok_or_else(|| TemplateError(format!("index {n} out of range")))?,
                    _ => return err(format!("can't index {} with {}", print(&v), print(k))),
                };
            }
            v
        }
        "printf" => Value::String(printf(&args)?),
        other => return err(format!("function {other:?} not defined")),
    })
}

/// golang.org/x/text's `cases.Title(language.Und, cases.NoLower)`: each word's first
/// letter upper-cased, the rest kept.
fn title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '\'';
    }
    out
}

fn printf(args: &[Value]) -> Result<String, TemplateError> {
    let Some(Value::String(format)) = args.first() else {
        return err("printf needs a format string");
    };
    let mut rest = args[1..].iter();
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v')) => {
                let v = rest.next().ok_or_else(|| {
                    TemplateError(format!("printf: missing argument for %{verb}"))
                })?;
                let _ = write!(out, "{}", print(v));
            }
            other => {
                return err(format!(
                    "printf: %{} is not supported",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec(t: &str, data: &Value) -> Result<String, TemplateError> {
        Template::parse(t)?.execute(data)
    }

    fn data() -> Value {
        json!({
            "status": {"id": "abc123", "state": "CONTAINER_RUNNING", "exitCode": 0,
                       "labels": {"b": "2", "a": "1"}, "metadata": {"name": "web"}},
            "containers": [
                {"id": "c1", "metadata": {"name": "one"}, "state": "CONTAINER_RUNNING"},
                {"id": "c2", "metadata": {"name": "two"}, "state": "CONTAINER_EXITED"}
            ],
            "empty": [],
            "info": {"pid": 42}
        })
    }

    #[test]
    fn fields_and_text() {
        let d = data();
        assert_eq!(exec("{{.status.id}}", &d).unwrap(), "abc123");
        assert_eq!(
            exec("id={{ .status.id }} pid={{.info.pid}}", &d).unwrap(),
            "id=abc123 pid=42"
        );
        assert_eq!(exec("{{$.status.metadata.name}}", &d).unwrap(), "web");
        assert_eq!(exec("{{.status.labels}}", &d).unwrap(), "map[a:1 b:2]");
        assert_eq!(exec("{{.empty}}", &d).unwrap(), "[]");
        assert_eq!(exec("{{\"a\\tb\"}}{{`raw\\n`}}", &d).unwrap(), "a\tbraw\\n");
        assert_eq!(exec("{{/* a comment */}}x", &d).unwrap(), "x");
    }

    #[test]
    fn missing_keys_are_errors_as_in_crictl() {
        let e = exec("{{.status.nope}}", &data()).unwrap_err().to_string();
        assert!(
            e.contains("no entry for key \"nope\" (at .status.nope)"),
            "{e}"
        );
        let e = exec("{{.status.id.x}}", &data()).unwrap_err().to_string();
        assert!(e.contains("can't evaluate field x"), "{e}");
    }

    #[test]
    fn range_if_with_else() {
        let d = data();
        assert_eq!(
            exec(
                "{{range .containers}}{{.id}} {{.metadata.name}}\n{{end}}",
                &d
            )
            .unwrap(),
            "c1 one\nc2 two\n"
        );
        assert_eq!(
            exec(
                "{{range .containers}}{{if eq .state \"CONTAINER_RUNNING\"}}{{.id}} up{{else if eq .id \"c2\"}}{{.id}} c2{{else}}?{{end}};{{end}}",
                &d
            )
            .unwrap(),
            "c1 up;c2 c2;"
        );
        assert_eq!(
            exec("{{range .empty}}x{{else}}none{{end}}", &d).unwrap(),
            "none"
        );
        assert_eq!(
            exec("{{range .status.labels}}{{.}},{{end}}", &d).unwrap(),
            "1,2,"
        );
        assert_eq!(
            exec("{{with .status.metadata}}{{.name}}{{end}}", &d).unwrap(),
            "web"
        );
        assert_eq!(exec("{{with .empty}}x{{else}}y{{end}}", &d).unwrap(), "y");
        assert_eq!(
            exec("{{if .status.exitCode}}bad{{else}}ok{{end}}", &d).unwrap(),
            "ok"
        );
        assert_eq!(
            exec("{{range .containers}}{{$.status.id}}{{end}}", &d).unwrap(),
            "abc123abc123"
        );
    }

    #[test]
    fn trimming() {
        let d = data();
        assert_eq!(
            exec("{{range .containers -}}\n  {{ .id }}\n{{- end}}", &d).unwrap(),
            "c1c2"
        );
    }

    #[test]
    fn functions_and_pipes() {
        let d = data();
        assert_eq!(
            exec("{{.status.metadata | json}}", &d).unwrap(),
            "{\"name\":\"web\"}\n"
        );
        assert_eq!(exec("{{json .info}}", &d).unwrap(), "{\"pid\":42}\n");
        assert_eq!(
            exec("{{.status.state | lower}}", &d).unwrap(),
            "container_running"
        );
        assert_eq!(exec("{{upper .status.id}}", &d).unwrap(), "ABC123");
        assert_eq!(
            exec("{{title \"hello wide world\"}}", &d).unwrap(),
            "Hello Wide World"
        );
        assert_eq!(exec("{{len .containers}}", &d).unwrap(), "2");
        assert_eq!(exec("{{index .status.labels \"a\"}}", &d).unwrap(), "1");
        assert!(exec("{{(index .containers 1).id}}", &d).is_err());
        assert!(
            exec("{{index .containers 1 | json}}", &d)
                .unwrap()
                .starts_with("{\"id\":\"c2\"")
        );
        assert_eq!(
            exec("{{printf \"%s=%d%%\" .status.id .info.pid}}", &d).unwrap(),
            "abc123=42%"
        );
        assert_eq!(
            exec("{{not .empty}} {{and 1 0}} {{or 0 \"x\"}} {{ne 1 2}}", &d).unwrap(),
            "true 0 x true"
        );
    }

    #[test]
    fn parse_errors() {
        for (t, want) in [
            ("{{.a", "unclosed"),
            ("{{if .a}}x", "if without end"),
            ("{{end}}", "unexpected end"),
            ("{{$x := 1}}", "variables"),
            ("{{template \"x\"}}", "not supported"),
            ("{{\"abc}}", "unclosed"),
        ] {
            let e = Template::parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
        let e = exec("{{nosuch .status}}", &data()).unwrap_err().to_string();
        assert!(e.contains("not defined"), "{e}");
    }
}
