//! A Helm stand-in: Go templates by `gtmpl`, plus the Helm (sprig) functions the chart uses.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use gtmpl::{Context, Func, FuncError, Template, Value};

/// `helm template RELEASE CHART --namespace NS --set k=v...`: every templates/*.yaml
/// (sorted), joined as documents. `set` values are YAML (`[a, b]`, `true`, `NodePort`).
pub fn render(
    chart: &Path,
    release: &str,
    namespace: &str,
    set: &[(&str, &str)],
) -> Result<String> {
    let meta: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(chart.join("Chart.yaml"))?)?;
    let mut values: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(chart.join("values.yaml"))?)?;
    for (path, v) in set {
        let mut at = &mut values;
        for k in path.split('.') {
            at = at
                .as_mapping_mut()
                .with_context(|| format!("--set {path}: not a map at {k}"))?
                .entry(serde_yaml::Value::from(k))
                .or_insert(serde_yaml::Value::Mapping(Default::default()));
        }
        *at = serde_yaml::from_str(v)?;
    }
    let field = |k: &str| meta.get(k).cloned().unwrap_or(serde_yaml::Value::Null);
    let root = object([
        ("Values", from_yaml(&values)?),
        (
            "Release",
            object([
                ("Name", Value::from(release)),
                ("Namespace", Value::from(namespace)),
                ("Service", Value::from("Helm")),
                ("IsInstall", Value::from(true)),
                ("IsUpgrade", Value::from(false)),
            ]),
        ),
        (
            "Chart",
            object([
                ("Name", from_yaml(&field("name"))?),
                ("Version", from_yaml(&field("version"))?),
                ("AppVersion", from_yaml(&field("appVersion"))?),
            ]),
        ),
    ]);
    let mut files: Vec<_> = fs::read_dir(chart.join("templates"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let mut out = String::new();
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = fs::read_to_string(&f)?;
        let mut t = Template::default();
        t.add_funcs(FUNCS);
        t.parse(text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let doc = t
            .render(&Context::from(root.clone()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        if doc.contains("<no value>") {
            bail!("{}: a value is missing:\n{doc}", f.display());
        }
        out.push_str("---\n");
        out.push_str(&doc);
        out.push('\n');
    }
    Ok(out)
}

const FUNCS: &[(&str, Func)] = &[
    ("toYaml", to_yaml),
    ("nindent", nindent),
    ("indent", indent),
    ("quote", quote),
    ("default", default),
    ("keys", keys),
    ("sortAlpha", sort_alpha),
];

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// YAML -> template value. Maps become `Value::Map`, whose missing keys are empty, as in Go.
fn from_yaml(v: &serde_yaml::Value) -> Result<Value> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Nil,
        Y::Bool(b) => Value::from(*b),
        Y::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => bail!("number {n}"),
        },
        Y::String(s) => Value::from(s.as_str()),
        Y::Sequence(s) => Value::Array(s.iter().map(from_yaml).collect::<Result<_>>()?),
        Y::Mapping(m) => {
            let mut out = HashMap::new();
            for (k, v) in m {
                let k = k
                    .as_str()
                    .with_context(|| format!("non-string key {k:?}"))?;
                out.insert(k.to_string(), from_yaml(v)?);
            }
            Value::Map(out)
        }
        Y::Tagged(t) => from_yaml(&t.value)?,
    })
}

fn to_json(v: &Value) -> Result<serde_json::Value, FuncError> {
    use serde_json::Value as J;
    Ok(match v {
        Value::NoValue | Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                J::from(u)
            } else if let Some(i) = n.as_i64() {
                J::from(i)
            } else {
                J::from(n.as_f64().ok_or(FuncError::UnableToConvertFromValue)?)
            }
        }
        Value::Array(a) => J::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(m) | Value::Object(m) => J::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, FuncError>>()?,
        ),
        Value::Function(_) => return Err(FuncError::UnableToConvertFromValue),
    })
}

fn arg<'a>(args: &'a [Value], i: usize, f: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::AtLeastXArgs(f.to_string(), i + 1))
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

/// Helm's toYaml: block YAML without the trailing newline.
fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let y = serde_yaml::to_string(&to_json(arg(args, 0, "toYaml")?)?)
        .map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::from(y.trim_end_matches('\n')))
}

fn indent_by(args: &[Value], f: &str) -> Result<String, FuncError> {
    let n = match arg(args, 0, f)? {
        Value::Number(n) => n.as_u64().ok_or(FuncError::UnableToConvertFromValue)?,
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let pad = " ".repeat(n as usize);
    let text = string(arg(args, 1, f)?);
    Ok(text
        .split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(indent_by(args, "indent")?))
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(format!("\n{}", indent_by(args, "nindent")?)))
}

/// Go's %q of the value's text (JSON string syntax agrees for what a chart quotes).
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let s = string(arg(args, 0, "quote")?);
    Ok(Value::from(
        serde_json::to_string(&s).map_err(|e| FuncError::Generic(e.to_string()))?,
    ))
}

/// sprig's `default DEFAULT VALUE`: VALUE unless empty (false, 0, "", empty list or map).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    let d = arg(args, 0, "default")?;
    let empty = match args.get(1) {
        None | Some(Value::NoValue | Value::Nil) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Map(m) | Value::Object(m)) => m.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Function(_)) => false,
    };
    Ok(if empty { d.clone() } else { args[1].clone() })
}

fn keys(args: &[Value]) -> Result<Value, FuncError> {
    match arg(args, 0, "keys")? {
        Value::Map(m) | Value::Object(m) => Ok(Value::Array(
            m.keys().map(|k| Value::from(k.as_str())).collect(),
        )),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

fn sort_alpha(args: &[Value]) -> Result<Value, FuncError> {
    match arg(args, 0, "sortAlpha")? {
        Value::Array(a) => {
            let mut v: Vec<String> = a.iter().map(string).collect();
            v.sort();
            Ok(Value::Array(v.into_iter().map(Value::from).collect()))
        }
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}
