//! The subset of Go templates that `--format` takes in Docker: `{{.Field}}`, nested
//! `{{.State.Status}}`, `{{json .Config}}`, `{{upper .X}}`/`{{lower .X}}`, a leading `table`,
//! and `\t`/`\n` escapes.

use serde_json::Value;

pub struct Template {
    pub table: bool,
    body: String,
}

impl Template {
    pub fn parse(s: &str) -> Template {
        let (table, body) = match s.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start().to_string()),
            None => (false, s.to_string()),
        };
        Template { table, body: body.replace("\\t", "\t").replace("\\n", "\n") }
    }

    pub fn render(&self, v: &Value) -> String {
        let mut out = String::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let Some(j) = rest[i..].find("}}") else {
                out.push_str(&rest[i..]);
                return out;
            };
            out.push_str(&eval(rest[i + 2..i + j].trim(), v));
            rest = &rest[i + j + 2..];
        }
        out.push_str(rest);
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

fn eval(expr: &str, v: &Value) -> String {
    let mut words = expr.split_whitespace();
    let first = words.next().unwrap_or("");
    match first {
        "json" => serde_json::to_string(&lookup(v, words.next().unwrap_or("."))).unwrap_or_default(),
        "upper" => to_text(&lookup(v, words.next().unwrap_or("."))).to_uppercase(),
        "lower" => to_text(&lookup(v, words.next().unwrap_or("."))).to_lowercase(),
        "println" => format!("{}\n", to_text(&lookup(v, words.next().unwrap_or(".")))),
        path => to_text(&lookup(v, path)),
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
}
