//! Chat templates rendered with minijinja exactly as Python transformers' `apply_chat_template`
//! renders them (same whitespace rules, `raise_exception`, `strftime_now`, transformers' `tojson`,
//! Python string methods through pycompat). Byte-identity is checked against goldens made by
//! transformers itself (`scripts/make-template-goldens.py`, `tests/template_golden.rs`).
//!
//! A template is a built-in name (`phi3`, `llama3`, `chatml`, `mistral`, shipped in `templates/`),
//! a `.jinja` file, a `tokenizer_config.json`, or a model folder (its `chat_template.jinja`, else
//! the `chat_template` of its `tokenizer_config.json`).

use std::path::Path;

use anyhow::{Context, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use crate::core::ChatMessage;
use crate::core::UsageError;

/// Fuel for one render: generous for any real chat template over a long conversation, but a
/// runaway loop stops within a second or so.
pub const DEFAULT_FUEL: u64 = 10_000_000;

/// The templates shipped with turnbench: name, source, bos token, eos token.
const BUILTIN: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("phi3", include_str!("../templates/phi3.jinja"), Some("<s>"), Some("<|endoftext|>")),
    ("llama3", include_str!("../templates/llama3.jinja"), Some("<|begin_of_text|>"), Some("<|eot_id|>")),
    ("chatml", include_str!("../templates/chatml.jinja"), None, Some("<|im_end|>")),
    ("mistral", include_str!("../templates/mistral.jinja"), Some("<s>"), Some("</s>")),
];

/// Names of the built-in templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.0).collect()
}

/// Special tokens a template may print (`bos_token`, `eos_token`); unset ones are undefined in
/// the template, as in transformers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    /// Where it came from: a built-in name or a file path (used in error messages).
    origin: String,
    tokens: SpecialTokens,
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).field("tokens", &self.tokens).finish()
    }
}

impl ChatTemplate {
    /// A built-in name, else a path (file or model folder).
    pub fn load(spec: &str) -> Result<Self> {
        if let Some(t) = Self::builtin(spec) {
            return t;
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(UsageError::new(format!(
                "chat template {spec:?} is neither a built-in ({}) nor an existing file or folder",
                builtin_names().join(", ")
            ))
            .into());
        }
        Self::from_path(path)
    }

    /// A built-in template by name.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        let (name, source, bos, eos) = BUILTIN.iter().find(|b| b.0 == name)?;
        let tokens = SpecialTokens { bos_token: bos.map(str::to_string), eos_token: eos.map(str::to_string) };
        Some(Self::from_source(&format!("templates/{name}.jinja"), source, tokens))
    }

    /// A `.jinja` file, a `tokenizer_config.json`, or a model folder.
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let jinja = path.join("chat_template.jinja");
            let config = path.join("tokenizer_config.json");
            let tokens = if config.is_file() { read_tokenizer_config(&config)?.1 } else { SpecialTokens::default() };
            if jinja.is_file() {
                let source = read(&jinja)?;
                return Self::from_source(&jinja.display().to_string(), &source, tokens);
            }
            if config.is_file() {
                return Self::from_path(&config);
            }
            return Err(UsageError::new(format!(
                "{} has neither chat_template.jinja nor tokenizer_config.json",
                path.display()
            ))
            .into());
        }
        if path.extension().is_some_and(|e| e == "json") {
            let (source, tokens) = read_tokenizer_config(path)?;
            let source = source.ok_or_else(|| UsageError::new(format!("{} has no chat_template", path.display())))?;
            return Self::from_source(&path.display().to_string(), &source, tokens);
        }
        // A bare .jinja file: take special tokens from a tokenizer_config.json beside it, if any.
        let beside = path.parent().map(|p| p.join("tokenizer_config.json")).filter(|p| p.is_file());
        let tokens = match beside {
            Some(config) => read_tokenizer_config(&config).map(|c| c.1).unwrap_or_default(),
            None => SpecialTokens::default(),
        };
        Self::from_source(&path.display().to_string(), &read(path)?, tokens)
    }

    /// Compiles `source`; a syntax error names `origin` and the line.
    pub fn from_source(origin: &str, source: &str, tokens: SpecialTokens) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| anyhow::anyhow!("minijinja syntax config: {e}"))?,
        );
        // Origins end in .json (tokenizer_config.json): never let the name pick an escaping mode.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(DEFAULT_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(origin.to_string(), source.to_string())
            .map_err(|e| UsageError::new(describe(origin, &e)))?;
        Ok(Self { origin: origin.to_string(), tokens, env })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn tokens(&self) -> &SpecialTokens {
        &self.tokens
    }

    /// Overrides the fuel limit (`None`: unlimited).
    pub fn set_fuel(&mut self, fuel: Option<u64>) {
        self.env.set_fuel(fuel);
    }

    /// Renders `messages` as transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` would.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        #[derive(Serialize)]
        struct Ctx<'a> {
            messages: &'a [ChatMessage],
            add_generation_prompt: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            bos_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            eos_token: Option<&'a str>,
        }
        let ctx = Ctx {
            messages,
            add_generation_prompt,
            bos_token: self.tokens.bos_token.as_deref(),
            eos_token: self.tokens.eos_token.as_deref(),
        };
        let template = self.env.get_template(&self.origin).map_err(|e| anyhow::anyhow!(describe(&self.origin, &e)))?;
        template.render(Value::from(minijinja::value::Serde(&ctx))).map_err(|e| anyhow::Error::new(UsageError::new(describe(&self.origin, &e))))
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading chat template {}", path.display()))
}

/// `chat_template` (a string, or the `default` of a list of named templates) and special tokens
/// (strings or `{ "content": ... }` objects) of a `tokenizer_config.json`.
fn read_tokenizer_config(path: &Path) -> Result<(Option<String>, SpecialTokens)> {
    let text = read(path)?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError::new(format!("{}:{}:{}: {e}", path.display(), e.line(), e.column())))?;
    let template = match &config["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| items.first())
            .and_then(|t| t["template"].as_str().map(str::to_string)),
        _ => None,
    };
    let token = |key: &str| match &config[key] {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v["content"].as_str().map(str::to_string),
    };
    Ok((template, SpecialTokens { bos_token: token("bos_token"), eos_token: token("eos_token") }))
}

/// `origin:line: message`, the message being minijinja's detail (or kind) without its own
/// location suffix.
fn describe(origin: &str, err: &Error) -> String {
    let what = match err.kind() {
        ErrorKind::OutOfFuel => "template ran too long (fuel limit reached; a runaway loop?)".to_string(),
        ErrorKind::InvalidOperation if err.detail().is_some() && is_raised(err) => {
            format!("template raised: {}", err.detail().unwrap_or_default().trim_start_matches(RAISED))
        }
        _ => match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.kind().to_string(),
        },
    };
    match err.line() {
        Some(line) => format!("{origin}:{line}: {what}"),
        None => format!("{origin}: {what}"),
    }
}

const RAISED: &str = "raise_exception: ";

fn is_raised(err: &Error) -> bool {
    err.detail().is_some_and(|d| d.starts_with(RAISED))
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

fn strftime_now(format: String) -> Result<Value, Error> {
    let now = jiff::Zoned::now();
    let mut out = String::new();
    use std::fmt::Write;
    write!(out, "{}", now.strftime(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format {format:?}")))?;
    Ok(Value::from(out))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)` — no HTML escaping, Python's default separators, key order kept.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: bool = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::Number => Some(" ".repeat(i64::try_from(v)?.max(0) as usize)),
        Some(v) => Some(v.as_str().unwrap_or_default().to_string()),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let item = v.get_item(&Value::from(0))?;
            let key = v.get_item(&Value::from(1))?;
            (item.as_str().unwrap_or(",").to_string(), key.as_str().unwrap_or(":").to_string())
        }
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let style = JsonStyle { ensure_ascii, indent, sort_keys, item_sep, key_sep };
    let mut out = String::new();
    dump(&value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    sort_keys: bool,
    item_sep: String,
    key_sep: String,
}

fn dump(value: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => quote(value.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            open_close(out, style, depth, '[', ']', items.len(), |i, out| dump(&items[i], style, depth + 1, out))?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if style.sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            open_close(out, style, depth, '{', '}', keys.len(), |i, out| {
                let key = &keys[i];
                quote(&key.as_str().map(str::to_string).unwrap_or_else(|| key.to_string()), style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                dump(&value.get_item(key)?, style, depth + 1, out)
            })?;
        }
        _ => quote(&value.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

fn open_close(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    open: char,
    close: char,
    len: usize,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        item(i, out)?;
    }
    if let Some(indent) = &style.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// Python's `repr(float)`: shortest round-trip digits, always with a `.0` or exponent.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
        Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
        None => s,
    }
}

fn quote(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Resolves `--chat-template` for a run: a spec given by the user, else the model folder's own.
pub fn resolve(spec: Option<&str>, model_dir: Option<&Path>) -> Result<Option<ChatTemplate>> {
    match (spec, model_dir) {
        (Some(spec), _) => ChatTemplate::load(spec).map(Some),
        (None, Some(dir)) => ChatTemplate::from_path(dir).map(Some),
        (None, None) => Ok(None),
    }
}

/// Renders every turn of every conversation (earlier answers are placeholders), so a template
/// that cannot render this suite (e.g. one that raises on a role order) fails before any request.
pub fn check_suite<'a>(template: &ChatTemplate, conversations: impl IntoIterator<Item = &'a crate::workload::Conversation>) -> Result<()> {
    for conversation in conversations {
        let mut state = crate::workload::prompt::ConversationState::new(conversation);
        for turn in 0..conversation.turns.len() {
            let prompt = state.begin_turn();
            template.render(&prompt.messages, true).with_context(|| {
                format!("--chat-template {} cannot render turn {} of {}", template.origin(), turn + 1, conversation.id)
            })?;
            state.finish_turn(format!("[answer to turn {}]", turn + 1));
        }
    }
    Ok(())
}
