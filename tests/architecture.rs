//! The module rules of `docs/architecture.md`, checked on the source text:
//!
//! 1. No product module imports the tools above it: `simulate` (simulators, replay, their
//!    CLI) and `demo` may use the product, never the other way round. The binary
//!    (`src/main.rs`) wires the tools in, and tests may use them.
//! 2. The pure modules — the engine, the alert and health rules, the decoders, the core —
//!    read no clock and do no I/O: time and input come in as arguments, so a replay, a test
//!    or a fuzzer drives them exactly.
//! 3. No product function is longer than [`MAX_FN_LINES`] lines.
//!
//! A text scan, not a compiler pass: it reads `use` paths and calls as written, which is how
//! the code base spells them (no re-exports of `simulate` or `demo` exist to hide behind).
//! Test code (files named `tests.rs`/`*_tests.rs`, and everything after a file's
//! `#[cfg(test)]` module) is left out.

use std::path::{Path, PathBuf};

/// Longest product function, in lines from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 120;

/// Modules above the product.
const TOOLS: [&str; 2] = ["src/simulate/", "src/demo/"];

/// Modules that must read no clock and do no I/O.
const PURE: [&str; 10] = [
    "src/occupancy/",
    "src/alerts.rs",
    "src/health.rs",
    "src/format.rs",
    "src/terminals/",
    "src/bookings/",
    "src/devices/counter.rs",
    "src/devices/stream/",
    "src/supervisor/core.rs",
    "src/supervisor/reorder.rs",
];

/// What reading a clock or doing I/O looks like in this code base.
const IMPURE: [&str; 14] = [
    "Timestamp::now",
    "Instant::now",
    "SystemTime",
    "Zoned::now",
    "clock::synchronised",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "tokio::",
    "rusqlite",
    "rumqttc",
    "serialport",
    "tract_onnx",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, as (path relative to the crate, product code only).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(root())
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            let name = path.file_name()?.to_string_lossy().into_owned();
            if name == "tests.rs" || name.ends_with("_tests.rs") || rel.contains("/tests/") {
                return None;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
            Some((rel, product_part(&text).to_string()))
        })
        .collect()
}

/// The text before the file's test module (`#[cfg(test)]` on a line of its own, a `mod`
/// of any visibility, or a `#[path]`, on the next).
fn product_part(text: &str) -> &str {
    let mut at = 0;
    while let Some(found) = text[at..].find("#[cfg(test)]\n") {
        let start = at + found;
        let next = text[start + "#[cfg(test)]\n".len()..]
            .lines()
            .next()
            .unwrap_or("");
        if next.contains("mod ") || next.trim_start().starts_with("#[path") {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// Code without comments: what `//` and `//!` say is not an import.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or("")))
}

fn is_tool(path: &str) -> bool {
    TOOLS.iter().any(|t| path.starts_with(t))
}

#[test]
fn no_product_module_imports_the_simulator_or_the_demo() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if is_tool(&path) || path == "src/main.rs" {
            continue;
        }
        for (n, line) in code_lines(&text) {
            for tool in ["simulate", "demo"] {
                if line.contains(&format!("crate::{tool}"))
                    || line.contains(&format!("hallgate::{tool}"))
                    || line.contains(&format!("super::{tool}"))
                {
                    found.push(format!("{path}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "product modules import a tool (see docs/architecture.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn pure_modules_read_no_clock_and_do_no_io() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if !PURE.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        for (n, line) in code_lines(&text) {
            for call in IMPURE {
                if line.contains(call) {
                    found.push(format!("{path}:{n}: {call}: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "pure modules read a clock or do I/O (pass the time or the bytes in instead):\n{}",
        found.join("\n")
    );
}

/// Each `fn` of `text` with its line and length, by brace counting (string literals and
/// comments skipped; char literals of braces are rare enough to be written `'\u{7b}'`).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let code = code
            .strip_prefix("pub ")
            .or_else(|| code.strip_prefix("pub(crate) "))
            .or_else(|| code.strip_prefix("pub(super) "))
            .unwrap_or(code);
        let code = code.strip_prefix("async ").unwrap_or(code);
        let code = code.strip_prefix("const ").unwrap_or(code);
        let Some(rest) = code.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body) in lines[start..].iter().enumerate() {
            let code = strip_strings(body);
            let code = code.split("//").next().unwrap_or("");
            if !opened && code.trim_end().ends_with(';') && !code.contains('{') {
                break;
            }
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                out.push((name.clone(), start + 1, offset + 1));
                break;
            }
        }
    }
    out
}

/// The line with its string literals emptied (a brace in a message is not a block).
fn strip_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (false, '"') => in_string = true,
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => in_string = false,
            (false, _) => out.push(c),
            (true, _) => {}
        }
    }
    out
}

#[test]
fn no_product_function_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        if is_tool(&path) {
            continue;
        }
        for (name, line, length) in functions(&text) {
            if length > MAX_FN_LINES {
                long.push(format!("{path}:{line}: fn {name} is {length} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "product functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanners on known text, so a rule that matches nothing cannot pass by accident.
    let text = "fn short() {\n    let a = \"{\";\n}\n\nfn long() {\n".to_string()
        + &"    x();\n".repeat(130)
        + "}\n";
    let found = functions(&text);
    assert_eq!(
        found,
        [("short".into(), 1, 3), ("long".into(), 5, 132)],
        "{found:?}"
    );
    let lines: Vec<_> = code_lines("use crate::simulate::day; // crate::demo\n").collect();
    assert_eq!(lines, [(1, "use crate::simulate::day; ")]);
    assert_eq!(
        product_part("fn a() {}\n#[cfg(test)]\nmod tests {}\n"),
        "fn a() {}\n"
    );
    assert_eq!(
        product_part("fn a() {}\n#[cfg(test)]\nfn b() {}\n#[cfg(test)]\npub(crate) mod tests {}\n"),
        "fn a() {}\n#[cfg(test)]\nfn b() {}\n"
    );
    assert!(sources().iter().any(|(p, _)| p == "src/supervisor/core.rs"));
}
