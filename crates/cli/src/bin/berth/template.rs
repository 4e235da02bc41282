//! The subset of Go templates that `--format` takes in Docker: `{{.Field}}`, nested
//! `{{.State.Status}}`, `$` for the top object, `{{range X}}…{{else}}…{{end}}` over lists and
//! maps (`.` is each value), `{{if X}}…{{else}}…{{end}}`, `{{with X}}…{{end}}`, the functions
//! `json`, `upper`, `lower`, `title`, `println`, `len`, `index X KEY…`, `join X SEP`,
//! `split X SEP`, `truncate X N`, `eq`, `ne`, `not`, string and number literals, `{{-`/`-}}` trimming, a leading
//! `table`, and `\t`/`\n` escapes. What it cannot parse is printed as it stands.

use serde_json::Value;

pub struct Template {
    pub table: bool,
    body: String,
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Expr(String),
    /// range/if/with: the expression, the body, the else branch.
    Block(Kind, String, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Range,
    If,
    With,
}

/// The template's pieces: text and the actions between `{{` and `}}` (trim markers applied).
fn tokens(body: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}") else { break };
        let mut inner = &rest[i + 2..i + j];
        let mut text = rest[..i].to_string();
        if let Some(x) = inner.strip_prefix('-') {
            inner = x;
            text = text.trim_end().to_string();
        }
        let trim_after = inner.ends_with('-');
        if trim_after {
            inner = &inner[..inner.len() - 1];
        }
        out.push((false, text));
        out.push((true, inner.trim().to_string()));
        rest = &rest[i + j + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push((false, rest.to_string()));
    out
}

/// Nodes up to an `else` or `end` (which is returned), or the end of the input.
fn parse_nodes(toks: &mut std::vec::IntoIter<(bool, String)>) -> (Vec<Node>, Option<String>) {
    let mut nodes = Vec::new();
    while let Some((action, t)) = toks.next() {
        if !action {
            if !t.is_empty() {
                nodes.push(Node::Text(t));
            }
            continue;
        }
        let (word, arg) = t.split_once(' ').map(|(w, a)| (w, a.trim())).unwrap_or((t.as_str(), ""));
        let kind = match word {
            "range" => Kind::Range,
            "if" => Kind::If,
            "with" => Kind::With,
            "end" | "else" => return (nodes, Some(word.to_string())),
            _ => {
                nodes.push(Node::Expr(t.clone()));
                continue;
            }
        };
        let (body, stop) = parse_nodes(toks);
        let other = if stop.as_deref() == Some("else") { parse_nodes(toks).0 } else { Vec::new() };
        nodes.push(Node::Block(kind, arg.to_string(), body, other));
    }
    (nodes, None)
}

impl Template {
    pub fn parse(s: &str) -> Template {
        let (table, body) = match s.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start().to_string()),
            None => (false, s.to_string()),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let nodes = parse_nodes(&mut tokens(&body).into_iter()).0;
        Template { table, body, nodes }
    }

    pub fn render(&self, v: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, v, v, &mut out);
        out
    }

    /// The header line for a `table` template: each field's name.
    pub fn header(&self, names: &dyn Fn(&str) -> String) -> String {
        let mut out = String::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let Some(j) = rest[i..].find("}}") else { break };
            let expr = rest[i + 2..i + j].trim();
            let field = expr.split_whitespace().last().unwrap_or("").trim_start_matches('.');
            out.push_str(&names(field));
            rest = &rest[i + j + 2..];
        }
        out.push_str(rest);
        out
    }
}

fn render(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Expr(e) => out.push_str(&to_text(&eval(e, dot, root))),
            Node::Block(kind, e, body, other) => {
                let v = eval(e, dot, root);
                match kind {
                    Kind::Range => {
                        let items: Vec<Value> = match &v {
                            Value::Array(a) => a.clone(),
                            Value::Object(m) => m.values().cloned().collect(),
                            _ => Vec::new(),
                        };
                        if items.is_empty() {
                            render(other, dot, root, out);
                        }
                        for item in &items {
                            render(body, item, root, out);
                        }
                    }
                    Kind::If if truthy(&v) => render(body, dot, root, out),
                    Kind::With if truthy(&v) => render(body, &v, root, out),
                    Kind::If | Kind::With => render(other, dot, root, out),
                }
            }
        }
    }
}

/// Go's notion of empty: false, 0, "", nothing, an empty list or map.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// The words of an action: quoted strings kept whole (without their quotes, marked by a
/// leading '"'), parentheses not supported.
fn words(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut w = String::from("\"");
            while let Some(ch) = chars.next() {
                if ch == c {
                    break;
                }
                if ch == '\\' && c == '"' {
                    match chars.next() {
                        Some('n') => w.push('\n'),
                        Some('t') => w.push('\t'),
                        Some(o) => w.push(o),
                        None => {}
                    }
                    continue;
                }
                w.push(ch);
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

/// One argument: a literal, `.`/`.Path` from the current value, `$`/`$.Path` from the top.
fn operand(w: &str, dot: &Value, root: &Value) -> Value {
    if let Some(s) = w.strip_prefix('"') {
        return Value::String(s.to_string());
    }
    if let Ok(n) = w.parse::<i64>() {
        return Value::from(n);
    }
    match w.strip_prefix('$') {
        Some(path) => lookup(root, path),
        None if w.starts_with('.') => lookup(dot, w),
        None => Value::Null,
    }
}

fn eval(expr: &str, dot: &Value, root: &Value) -> Value {
    let w = words(expr);
    let Some(first) = w.first() else { return Value::Null };
    let arg = |i: usize| w.get(i).map(|x| operand(x, dot, root)).unwrap_or_else(|| dot.clone());
    let text = |i: usize| to_text(&arg(i));
    match first.as_str() {
        "json" => Value::String(serde_json::to_string(&arg(1)).unwrap_or_default()),
        "upper" => Value::String(text(1).to_uppercase()),
        "lower" => Value::String(text(1).to_lowercase()),
        "title" => Value::String(
            text(1)
                .split(' ')
                .map(|s| {
                    let mut c = s.chars();
                    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "println" => Value::String(format!(
            "{}\n",
            w[1..].iter().map(|x| to_text(&operand(x, dot, root))).collect::<Vec<_>>().join(" ")
        )),
        "len" => Value::from(match arg(1) {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => 0,
        }),
        "index" => {
            let mut cur = arg(1);
            for k in w.iter().skip(2).map(|x| operand(x, dot, root)) {
                cur = match (&cur, &k) {
                    (Value::Object(m), Value::String(s)) => m.get(s).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(n)) => {
                        n.as_u64().and_then(|i| a.get(i as usize)).cloned().unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                };
            }
            cur
        }
        "join" => match arg(1) {
            Value::Array(a) => Value::String(a.iter().map(to_text).collect::<Vec<_>>().join(&text(2))),
            other => Value::String(to_text(&other)),
        },
        "eq" => Value::Bool(arg(1) == arg(2)),
        "ne" => Value::Bool(arg(1) != arg(2)),
        "not" => Value::Bool(!truthy(&arg(1))),
        "split" => Value::Array(text(1).split(text(2).as_str()).map(|s| Value::String(s.into())).collect()),
        "truncate" => {
            let n = arg(2).as_u64().unwrap_or(0) as usize;
            Value::String(text(1).chars().take(n).collect())
        }
        _ if w.len() == 1 => operand(first, dot, root),
        _ => Value::String(format!("{{{{{expr}}}}}")),
    }
}

fn lookup(v: &Value, path: &str) -> Value {
    let mut cur = v.clone();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = cur.get(part).cloned().unwrap_or(Value::Null);
    }
    cur
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(to_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", to_text(v))).collect::<Vec<_>>().join(" "))
        }
        other => other.to_string(),
    }
}

/// Prints rows as Docker's tabwriter does: columns padded to the widest cell plus 3 spaces,
/// and at least 10 wide (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`).
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut w = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count()).max(7);
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(w[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    print!("{out}");
}

/// Splits rendered template lines on tabs and aligns them.
/// A listing as `ls` commands print it: `json` (one object per line), `table FIELDS` (a header
/// from `header`, columns aligned), or a plain template per row.
pub fn print_listing(rows: &[Value], fmt: &str, header: &dyn Fn(&str) -> String) {
    if fmt == "json" {
        rows.iter().for_each(|v| println!("{v}"));
        return;
    }
    let (table, body) = match fmt.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, fmt),
    };
    let t = Template::parse(body);
    let mut lines = Vec::new();
    if table {
        lines.push(t.header(header));
    }
    lines.extend(rows.iter().map(|v| t.render(v)));
    if table {
        print_tabbed(&lines);
    } else {
        lines.iter().for_each(|l| println!("{l}"));
    }
}

/// Prints the pieces of the inspected objects a template picks, or all of them as JSON.
pub fn print_inspected(out: &[Value], format: Option<&str>) -> anyhow::Result<()> {
    match format {
        Some(f) => {
            let t = Template::parse(f);
            out.iter().for_each(|v| println!("{}", t.render(v)));
        }
        None => println!("{}", serde_json::to_string_pretty(out)?),
    }
    Ok(())
}

pub fn print_tabbed(lines: &[String]) {
    let rows: Vec<Vec<String>> = lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
    print_table(&rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_and_json() {
        let v = serde_json::json!({"ID": "abc", "State": {"Status": "running"}, "Labels": {"a": "b"}});
        assert_eq!(Template::parse("{{.ID}}\\t{{.State.Status}}").render(&v), "abc\trunning");
        assert_eq!(Template::parse("{{json .Labels}}").render(&v), r#"{"a":"b"}"#);
        let t = Template::parse("table {{.ID}}\t{{.Names}}");
        assert!(t.table);
        assert_eq!(t.header(&|f| f.to_uppercase()), "ID\tNAMES");
    }

    #[test]
    fn range_if_with_index_and_functions() {
        let v = serde_json::json!({
            "Name": "web",
            "NetworkSettings": {"Networks": {"a": {"IPAddress": "10.0.0.2"}, "b": {"IPAddress": "10.1.0.2"}}},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"com.example.team": "core"}},
            "Mounts": [],
            "State": {"Running": true, "ExitCode": 0},
        });
        let r = |t: &str| Template::parse(t).render(&v);
        assert_eq!(r("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"), "10.0.0.2 10.1.0.2 ");
        assert_eq!(r("{{range .Config.Env}}{{println .}}{{end}}"), "A=1\nB=2\n");
        assert_eq!(r("{{range .Mounts}}x{{else}}none{{end}}"), "none");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}} {{if .State.ExitCode}}bad{{end}}"), "up ");
        assert_eq!(r(r#"{{index .Config.Labels "com.example.team"}}"#), "core");
        assert_eq!(r(r#"{{index .Config.Env 1}}"#), "B=2");
        assert_eq!(r(r#"{{join .Config.Env ","}} {{len .Config.Env}}"#), "A=1,B=2 2");
        assert_eq!(r("{{with .Config.Labels}}{{len .}}{{end}}"), "1");
        assert_eq!(r("{{range $.Config.Env -}} [{{.}}] {{- end}}"), "[A=1][B=2]");
        assert_eq!(r(r#"{{upper .Name}} {{title "a b"}} {{truncate .Name 2}}"#), "WEB A B we");
        assert_eq!(r("{{.Missing}}"), "<no value>");
        assert_eq!(r(r#"{{if eq .Name "web"}}yes{{end}}{{if not .State.ExitCode}} ok{{end}}"#), "yes ok");
    }
}
