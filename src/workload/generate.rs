//! Deterministic generators for long attachments: synthetic service logs, metric tables, an
//! OpenAPI-style spec and Rust-like source code.
//!
//! The suite needs 15K–128K-token contexts. Storing that much text in `conversations.json` would
//! make it unreadable and would tempt copying prose from elsewhere, so an attachment can say
//! `"generate": { "kind": "log", "tokens": 30000, "seed": 7 }` and is expanded here at load time.
//!
//! Every generator is a pure function of `(kind, tokens, seed)`: same inputs, same bytes, on every
//! platform (it uses its own SplitMix64, not `rand`, whose streams may change between versions).
//! Output is about `tokens × 4` characters (the estimate's ~4 chars/token), cut at a line
//! boundary, so [`estimate_tokens`] of the result lands within a few percent of `tokens`.

use std::fmt::Write as _;

/// Characters per token assumed by the estimate and by the generators' sizing.
pub const CHARS_PER_TOKEN: u64 = 4;

/// The largest `tokens` a generator accepts (bigger would not fit any served context anyway).
pub const MAX_GENERATED_TOKENS: u64 = 250_000;

/// What a generator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorKind {
    /// Application logs of a few services: timestamps, levels, request ids, status codes, latencies.
    Log,
    /// A markdown table of per-service, per-hour metrics.
    Table,
    /// An OpenAPI-style YAML spec of a REST API.
    ApiSpec,
    /// Rust-like source: structs, impls, functions with plausible bodies.
    Code,
}

impl GeneratorKind {
    /// Every kind with its name as written in the data file.
    pub const ALL: [(&'static str, GeneratorKind); 4] = [
        ("log", GeneratorKind::Log),
        ("table", GeneratorKind::Table),
        ("api_spec", GeneratorKind::ApiSpec),
        ("code", GeneratorKind::Code),
    ];

    /// Parses a data-file name (`log`, `table`, `api_spec`, `code`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

/// The estimate used across the crate: `ceil(chars / 4)`.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(CHARS_PER_TOKEN)
}

/// Generates about `tokens` tokens (`tokens × 4` characters) of `kind` text from `seed`.
pub fn generate(kind: GeneratorKind, tokens: u64, seed: u64) -> String {
    let target = (tokens.min(MAX_GENERATED_TOKENS) * CHARS_PER_TOKEN) as usize;
    let mut rng = SplitMix64::new(seed ^ (kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = String::with_capacity(target + 256);
    match kind {
        GeneratorKind::Log => log(&mut out, target, &mut rng),
        GeneratorKind::Table => table(&mut out, target, &mut rng),
        GeneratorKind::ApiSpec => api_spec(&mut out, target, &mut rng),
        GeneratorKind::Code => code(&mut out, target, &mut rng),
    }
    truncate_at_line(&mut out, target);
    out
}

/// Cuts `out` to at most `target` bytes (all generated text is ASCII), at the last newline before
/// the cut when one is reasonably close, so the text does not end mid-line.
fn truncate_at_line(out: &mut String, target: usize) {
    if out.len() <= target {
        return;
    }
    out.truncate(target);
    if let Some(nl) = out.rfind('\n') {
        if nl + (target / 20).min(200) >= target {
            out.truncate(nl);
        }
    }
    while out.ends_with('\n') {
        out.pop();
    }
}

/// SplitMix64: tiny, fast, and fixed forever.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SERVICES: &[&str] = &[
    "api-gateway",
    "auth-service",
    "billing-worker",
    "inventory-api",
    "search-indexer",
    "notification-svc",
    "checkout-api",
    "session-cache",
];
const ENDPOINTS: &[&str] = &[
    "/v2/orders",
    "/v2/orders/{id}",
    "/v2/cart/items",
    "/v1/login",
    "/v1/token/refresh",
    "/v2/inventory/reserve",
    "/v2/search",
    "/v1/invoices/{id}/pdf",
    "/healthz",
    "/v2/payments/capture",
];
/// Endpoints a service plausibly serves (the gateway serves all of them).
fn endpoint_of(service: &str, rng: &mut SplitMix64) -> &'static str {
    let own: &[&str] = match service {
        "auth-service" => &["/v1/login", "/v1/token/refresh"],
        "billing-worker" => &["/v1/invoices/{id}/pdf", "/v2/payments/capture"],
        "inventory-api" => &["/v2/inventory/reserve", "/healthz"],
        "search-indexer" => &["/v2/search", "/healthz"],
        "checkout-api" => &["/v2/orders", "/v2/orders/{id}", "/v2/cart/items", "/v2/payments/capture"],
        "session-cache" => &["/v1/token/refresh", "/v2/cart/items"],
        "notification-svc" => &["/healthz"],
        _ => ENDPOINTS,
    };
    rng.pick(own)
}

const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
const REGIONS: &[&str] = &["eu-west-1", "us-east-2", "ap-south-1"];
const HOSTS: &[&str] = &["node-a3", "node-b1", "node-b7", "node-c2", "node-c5"];

fn log(out: &mut String, target: usize, rng: &mut SplitMix64) {
    // 2026-03-14T02:00:00.000Z plus a seeded offset; time only moves forward.
    let mut millis: u64 = rng.below(3_600_000);
    let mut incident = false;
    while out.len() < target {
        millis += 5 + rng.below(900);
        let (h, m, s, ms) = (2 + millis / 3_600_000, (millis / 60_000) % 60, (millis / 1000) % 60, millis % 1000);
        let ts = format!("2026-03-14T{:02}:{m:02}:{s:02}.{ms:03}Z", h % 24);
        let service = rng.pick(SERVICES);
        let host = rng.pick(HOSTS);
        let req = format!("{:016x}", rng.next());
        // An incident window comes and goes: errors and latency spike inside it.
        if rng.chance(1) {
            incident = !incident;
        }
        let roll = rng.below(100);
        let error_rate = if incident { 25 } else { 3 };
        if roll < 70 {
            let method = rng.pick(METHODS);
            let path = endpoint_of(service, rng);
            let status = if rng.below(100) < error_rate {
                *[500u16, 502, 503, 504, 429].get(rng.below(5) as usize).unwrap_or(&500)
            } else if rng.chance(4) {
                *[400u16, 401, 404, 409].get(rng.below(4) as usize).unwrap_or(&400)
            } else if method == "POST" {
                201
            } else {
                200
            };
            let base = if incident { 400 } else { 20 };
            let latency = base + rng.below(if status >= 500 { 5000 } else { 300 });
            let level = if status >= 500 { "ERROR" } else if status >= 400 { "WARN " } else { "INFO " };
            let _ = writeln!(
                out,
                "{ts} {level} [{service}] host={host} req={req} method={method} path={path} status={status} latency_ms={latency} bytes={}",
                rng.below(48_000) + 120
            );
        } else if roll < 80 {
            let pool = rng.below(64);
            let _ = writeln!(
                out,
                "{ts} DEBUG [{service}] host={host} db.pool active={pool} idle={} waiting={} region={}",
                64 - pool,
                if incident { rng.below(40) } else { 0 },
                rng.pick(REGIONS)
            );
        } else if roll < 88 {
            let _ = writeln!(
                out,
                "{ts} INFO  [{service}] host={host} gc pause_ms={} heap_mb={} goroutines={}",
                rng.below(if incident { 900 } else { 60 }) + 1,
                512 + rng.below(3500),
                80 + rng.below(2000)
            );
        } else if roll < 95 {
            let upstream = rng.pick(SERVICES);
            let what = rng.pick(&[
                "upstream timeout after 3000ms",
                "connection reset by peer",
                "circuit breaker half-open, probing",
                "retrying request (attempt 2/3)",
                "TLS handshake took longer than 1s",
            ]);
            let level = if incident { "ERROR" } else { "WARN " };
            let _ = writeln!(out, "{ts} {level} [{service}] host={host} req={req} upstream={upstream} msg=\"{what}\"");
        } else {
            let what = rng.pick(&[
                "config reloaded from /etc/app/config.yaml",
                "cache warmup complete",
                "leader election: acquired lease",
                "feature flag checkout_v3 evaluated to true",
                "scheduled job compact-sessions finished",
                "health check passed",
            ]);
            let _ = writeln!(out, "{ts} INFO  [{service}] host={host} msg=\"{what}\" duration_ms={}", rng.below(2500));
        }
    }
}

fn table(out: &mut String, target: usize, rng: &mut SplitMix64) {
    let header = "| hour (UTC) | service | region | requests | errors | error % | p50 ms | p95 ms | p99 ms | cpu % | mem GiB | cache hit % |\n\
                  |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let mut day = 1 + rng.below(20);
    let mut hour = 0;
    let mut section = 0;
    while out.len() < target {
        if hour == 0 {
            section += 1;
            let _ = write!(out, "\n### Day {section}: 2026-04-{day:02}\n\n{header}");
        }
        for service in SERVICES {
            let region = rng.pick(REGIONS);
            let busy = (8..20).contains(&hour);
            let requests = (if busy { 40_000 } else { 9_000 }) + rng.below(30_000);
            let bad_hour = rng.chance(3);
            let errors = requests * (if bad_hour { 30 + rng.below(80) } else { rng.below(8) }) / 1000;
            let p50 = 12 + rng.below(40) + if bad_hour { 80 } else { 0 };
            let p95 = p50 * 3 + rng.below(60);
            let p99 = p95 * 2 + rng.below(200);
            let _ = writeln!(
                out,
                "| {hour:02}:00 | {service} | {region} | {requests} | {errors} | {:.2} | {p50} | {p95} | {p99} | {} | {:.1} | {:.1} |",
                errors as f64 * 100.0 / requests as f64,
                15 + rng.below(if busy { 75 } else { 35 }),
                1.0 + rng.below(140) as f64 / 10.0,
                60.0 + rng.below(395) as f64 / 10.0,
            );
        }
        hour = (hour + 1) % 24;
        if hour == 0 {
            day = day % 28 + 1;
        }
    }
}

const RESOURCES: &[&str] = &[
    "order", "invoice", "customer", "shipment", "product", "warehouse", "coupon", "refund", "subscription",
    "webhook", "api_key", "audit_event", "payment", "return", "supplier",
];
/// Field name, JSON type, format (empty for none).
const FIELDS: &[(&str, &str, &str)] = &[
    ("status", "string", ""),
    ("created_at", "string", "date-time"),
    ("updated_at", "string", "date-time"),
    ("amount", "number", "double"),
    ("currency", "string", ""),
    ("quantity", "integer", "int32"),
    ("external_ref", "string", ""),
    ("notes", "string", ""),
    ("priority", "integer", "int32"),
    ("region", "string", ""),
    ("owner_id", "string", "uuid"),
    ("expires_at", "string", "date-time"),
    ("is_active", "boolean", ""),
    ("total", "number", "double"),
    ("discount", "number", "double"),
    ("tax_rate", "number", "float"),
    ("sku", "string", ""),
    ("email", "string", "email"),
    ("locale", "string", ""),
    ("version", "integer", "int64"),
];

fn api_spec(out: &mut String, target: usize, rng: &mut SplitMix64) {
    let _ = write!(
        out,
        "openapi: 3.0.3\ninfo:\n  title: Commerce Platform API\n  version: 2.{}.{}\n  description: Internal REST API of the commerce platform (generated spec).\nservers:\n  - url: https://api.internal.example/v2\npaths:\n",
        rng.below(20),
        rng.below(10)
    );
    let mut schemas = String::from("components:\n  schemas:\n");
    let mut round = 0u64;
    'outer: loop {
        for resource in RESOURCES {
            if out.len() + schemas.len() >= target {
                break 'outer;
            }
            let name = if round == 0 { resource.to_string() } else { format!("{resource}_v{}", round + 2) };
            let schema = camel(&name);
            let plural = format!("{name}s");
            let vowel = name.starts_with(['a', 'e', 'i', 'o', 'u']);
            let (article, cap_article) = if vowel { ("an", "An") } else { ("a", "A") };
            let _ = write!(
                out,
                "  /{plural}:\n    get:\n      operationId: list{schema}s\n      summary: List {name} records, newest first.\n      tags: [{resource}]\n      parameters:\n        - name: limit\n          in: query\n          schema: {{ type: integer, minimum: 1, maximum: {}, default: 50 }}\n        - name: cursor\n          in: query\n          schema: {{ type: string }}\n      responses:\n        '200':\n          description: A page of {name} records.\n          content:\n            application/json:\n              schema:\n                type: object\n                properties:\n                  data: {{ type: array, items: {{ $ref: '#/components/schemas/{schema}' }} }}\n                  next_cursor: {{ type: string, nullable: true }}\n        '401': {{ $ref: '#/components/responses/Unauthorized' }}\n        '429': {{ $ref: '#/components/responses/RateLimited' }}\n    post:\n      operationId: create{schema}\n      summary: Create {article} {name}.\n      requestBody:\n        required: true\n        content:\n          application/json:\n            schema: {{ $ref: '#/components/schemas/{schema}' }}\n      responses:\n        '201': {{ description: Created. }}\n        '409': {{ description: {cap_article} {name} with this external_ref already exists. }}\n        '422': {{ $ref: '#/components/responses/ValidationFailed' }}\n  /{plural}/{{id}}:\n    get:\n      operationId: get{schema}\n      parameters:\n        - {{ name: id, in: path, required: true, schema: {{ type: string, format: uuid }} }}\n      responses:\n        '200': {{ description: The {name}. }}\n        '404': {{ $ref: '#/components/responses/NotFound' }}\n    {}:\n      operationId: {}{schema}\n      responses:\n        '{}': {{ description: Done. }}\n",
                [100, 200, 500, 1000][rng.below(4) as usize],
                if rng.chance(50) { "patch" } else { "delete" },
                if rng.chance(50) { "update" } else { "remove" },
                if rng.chance(50) { 200 } else { 204 },
            );
            let _ = write!(schemas, "    {schema}:\n      type: object\n      required: [id");
            let n = 4 + rng.below(8) as usize;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                let f = FIELDS[rng.below(FIELDS.len() as u64) as usize];
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
            for (f, _, _) in fields.iter().take(2) {
                let _ = write!(schemas, ", {f}");
            }
            schemas.push_str("]\n      properties:\n        id: { type: string, format: uuid, readOnly: true }\n");
            for (f, ty, format) in &fields {
                if format.is_empty() {
                    let _ = writeln!(schemas, "        {f}: {{ type: {ty} }}");
                } else {
                    let _ = writeln!(schemas, "        {f}: {{ type: {ty}, format: {format} }}");
                }
            }
        }
        round += 1;
    }
    out.push_str(&schemas);
    out.push_str(
        "  responses:\n    Unauthorized: { description: Missing or invalid bearer token. }\n    NotFound: { description: No such resource. }\n    RateLimited: { description: Too many requests; see Retry-After. }\n    ValidationFailed: { description: The body failed validation; errors lists each field. }\n",
    );
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

const NOUNS: &[&str] = &[
    "request", "batch", "token", "session", "block", "entry", "lease", "record", "span", "chunk", "frame",
    "window", "bucket", "shard", "cursor",
];
const VERBS: &[&str] = &[
    "parse", "validate", "flush", "merge", "evict", "schedule", "encode", "decode", "refill", "compact",
    "resolve", "retry", "drain", "hash", "split",
];

fn code(out: &mut String, target: usize, rng: &mut SplitMix64) {
    let mut module = 0;
    while out.len() < target {
        module += 1;
        let noun = rng.pick(NOUNS);
        let ty = camel(noun);
        let _ = write!(
            out,
            "// ---- src/{noun}_{module}.rs ----\n//! {ty} handling for the storage engine (module {module}).\n\nuse std::collections::{{HashMap, VecDeque}};\nuse std::time::{{Duration, Instant}};\n\n#[derive(Debug, Clone, PartialEq)]\npub struct {ty}{module} {{\n    pub id: u64,\n    pub created: Instant,\n    pub payload: Vec<u8>,\n    pub attempts: u32,\n    pub ttl: Duration,\n}}\n\n#[derive(Debug, thiserror::Error)]\npub enum {ty}Error{module} {{\n    #[error(\"{noun} {{0}} not found\")]\n    NotFound(u64),\n    #[error(\"{noun} payload too large: {{size}} > {{limit}}\")]\n    TooLarge {{ size: usize, limit: usize }},\n    #[error(\"gave up after {{0}} attempts\")]\n    Exhausted(u32),\n}}\n\npub struct {ty}Store{module} {{\n    items: HashMap<u64, {ty}{module}>,\n    queue: VecDeque<u64>,\n    limit: usize,\n}}\n\nimpl {ty}Store{module} {{\n    pub fn new(limit: usize) -> Self {{\n        Self {{ items: HashMap::new(), queue: VecDeque::new(), limit }}\n    }}\n"
        );
        let fns = 3 + rng.below(5);
        for _ in 0..fns {
            let verb = rng.pick(VERBS);
            let other = rng.pick(NOUNS);
            let limit = 16 << rng.below(8);
            let _ = write!(
                out,
                "\n    /// {}s the {noun} with `id`, {} its {other} when needed.\n    pub fn {verb}_{other}(&mut self, id: u64) -> Result<usize, {ty}Error{module}> {{\n        let item = self.items.get_mut(&id).ok_or({ty}Error{module}::NotFound(id))?;\n        if item.payload.len() > self.limit {{\n            return Err({ty}Error{module}::TooLarge {{ size: item.payload.len(), limit: self.limit }});\n        }}\n        item.attempts += 1;\n        if item.attempts > {} {{\n            return Err({ty}Error{module}::Exhausted(item.attempts));\n        }}\n        let mut total = 0usize;\n        for (i, byte) in item.payload.iter_mut().enumerate() {{\n            if i % {} == 0 {{\n                *byte = byte.wrapping_add({});\n            }}\n            total += *byte as usize;\n        }}\n        if item.created.elapsed() > item.ttl {{\n            self.queue.retain(|q| *q != id);\n        }} else if total > {limit} {{\n            self.queue.push_back(id);\n        }}\n        Ok(total)\n    }}\n",
                camel(verb),
                rng.pick(&["refreshing", "dropping", "re-encoding", "splitting", "re-queueing"]),
                2 + rng.below(6),
                2 + rng.below(30),
                1 + rng.below(250),
            );
        }
        let _ = write!(
            out,
            "}}\n\n#[cfg(test)]\nmod tests {{\n    use super::*;\n\n    #[test]\n    fn missing_{noun}_is_not_found() {{\n        let mut store = {ty}Store{module}::new({});\n        assert!(store.items.is_empty());\n        assert!(store.queue.is_empty());\n    }}\n}}\n\n",
            64 << rng.below(6)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_seed_dependent() {
        for (_, kind) in GeneratorKind::ALL {
            let a = generate(kind, 3000, 7);
            assert_eq!(a, generate(kind, 3000, 7), "{kind:?} not deterministic");
            assert_ne!(a, generate(kind, 3000, 8), "{kind:?} ignores the seed");
        }
    }

    #[test]
    fn generators_hit_the_requested_size_within_15_percent() {
        for (_, kind) in GeneratorKind::ALL {
            for tokens in [50u64, 400, 2_500, 30_000, 120_000] {
                let text = generate(kind, tokens, 42);
                let got = estimate_tokens(&text) as f64;
                let want = tokens as f64;
                assert!((got - want).abs() <= want * 0.15, "{kind:?} {tokens}: got {got} tokens");
                assert!(text.is_ascii());
            }
        }
    }

    #[test]
    fn generated_text_looks_like_its_kind() {
        let log = generate(GeneratorKind::Log, 2000, 1);
        assert!(log.lines().all(|l| l.starts_with("2026-03-14T")), "{log}");
        assert!(log.contains("status="));
        let table = generate(GeneratorKind::Table, 2000, 1);
        assert!(table.contains("| hour (UTC) | service |"));
        let spec = generate(GeneratorKind::ApiSpec, 2000, 1);
        assert!(spec.starts_with("openapi: 3.0.3"));
        assert!(spec.contains("components:\n  schemas:"));
        let code = generate(GeneratorKind::Code, 2000, 1);
        assert!(code.contains("pub fn ") && code.contains("impl "));
    }

    #[test]
    fn kind_names_round_trip() {
        for (name, kind) in GeneratorKind::ALL {
            assert_eq!(GeneratorKind::parse(name), Some(kind));
            assert_eq!(kind.name(), name);
        }
        assert_eq!(GeneratorKind::parse("prose"), None);
    }
}
