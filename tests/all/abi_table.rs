//! The ABI's imports have one description, `sdk/abi.txt`, and every copy is
//! checked against it: the host (its registrations in `src/abi/terrafirma/`,
//! and a module importing the whole table, which must link without a
//! warning), the Rust SDK (`sdk/rust/src/sys.rs`, through a guest importing
//! every function it declares) and the C header (`sdk/c/terrafirma.h`, the
//! same way).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use wasmparser::{Parser, Payload, TypeRef, ValType};

use crate::examples::built_examples;
use crate::harness::{Resp, TestNode};

/// A function type, as the table writes it: `(i32, i32) -> i32`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    params: Vec<String>,
    result: Option<String>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({})", self.params.join(", "))?;
        match &self.result {
            Some(result) => write!(f, " -> {result}"),
            None => Ok(()),
        }
    }
}

/// The name of every import, with its type.
type Imports = BTreeMap<String, Signature>;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A type of the table: the ABI has `i32` and `i64` only.
fn value_type(text: &str, at: &str) -> String {
    let text = text.trim();
    assert!(text == "i32" || text == "i64", "{at}: type {text:?} is neither i32 nor i64");
    text.to_owned()
}

/// The table of `sdk/abi.txt`: `name(type, ...)` or `name(type, ...) -> type`
/// per line, `#` comments and blank lines aside.
fn table() -> Imports {
    let mut table = Imports::new();
    for (number, line) in read("sdk/abi.txt").lines().enumerate() {
        let at = format!("sdk/abi.txt:{}", number + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line.split_once('(').unwrap_or_else(|| panic!("{at}: no `(` in {line:?}"));
        let (params, rest) = rest.split_once(')').unwrap_or_else(|| panic!("{at}: no `)` in {line:?}"));
        let name = name.trim();
        assert!(
            name.starts_with("hostcall_") && name.bytes().all(|b| b == b'_' || b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{at}: {name:?} is not a hostcall name"
        );
        let params = if params.trim().is_empty() { Vec::new() } else { params.split(',').map(|p| value_type(p, &at)).collect() };
        let rest = rest.trim();
        let result = match rest.strip_prefix("->") {
            Some(result) => Some(value_type(result, &at)),
            None if rest.is_empty() => None,
            None => panic!("{at}: expected `-> type` or nothing after `)`, got {rest:?}"),
        };
        let previous = table.insert(name.to_owned(), Signature { params, result });
        assert!(previous.is_none(), "{at}: {name} is listed twice");
    }
    assert!(table.len() >= 30, "sdk/abi.txt lists only {} hostcalls", table.len());
    table
}

/// What a hostcall's Rust result (`HostcallResult<R>`) is for the guest:
/// the `AbiValue` impls of `src/abi/terrafirma/register.rs`.
fn host_result(rust: &str, at: &str) -> Option<String> {
    match rust {
        "()" => None,
        "i64" => Some("i64".into()),
        "bool" | "Handle" | "HostcallStatus" | "StatusCode" => Some("i32".into()),
        other => panic!("{at}: result type {other} is not known here: add it as register.rs's AbiValue impl answers it"),
    }
}

/// The hostcalls the host registers: every `plain!`, `reentrant!` and
/// `waiting!` of `src/abi/terrafirma/*.rs`, with the parameters the macro
/// lists and the result of the function it names.
fn host_registrations() -> Imports {
    let dir = root().join("src/abi/terrafirma");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    let mut host = Imports::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Without comments: the macros' own docs show them in use.
        let code: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        for mac in ["plain!(", "reentrant!(", "waiting!("] {
            for (start, _) in code.match_indices(mac) {
                let call = &code[start + mac.len()..];
                // A use inside a macro's own definition (`$linker`) registers nothing.
                if call.trim_start().starts_with('$') {
                    continue;
                }
                let at = format!("src/abi/terrafirma/{file_name}: {mac}");
                let call = &call[call.find("hostcall_").unwrap_or_else(|| panic!("{at}: no hostcall named"))..];
                let (name, rest) = call.split_once('(').unwrap();
                let name = name.trim();
                let (params, _) = rest.split_once(')').unwrap();
                let at = format!("{at}{name}");
                let params = params
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| value_type(p.split_once(':').unwrap_or_else(|| panic!("{at}: parameter {p:?}")).1, &at))
                    .collect();
                // `fn hostcall_x<T: TerrafirmaView>(...) -> HostcallResult<R> {`
                let definition = code.find(&format!("fn {name}<")).unwrap_or_else(|| panic!("{at}: no `fn {name}<` in {file_name}"));
                let head = &code[definition..definition + code[definition..].find('{').unwrap()];
                let result = head.split_once("-> HostcallResult<").unwrap_or_else(|| panic!("{at}: no `-> HostcallResult<...>`")).1;
                let result = host_result(result[..result.rfind('>').unwrap()].trim(), &at);
                let previous = host.insert(name.to_owned(), Signature { params, result });
                assert!(previous.is_none(), "{at}: registered twice");
            }
        }
    }
    host
}

/// Every difference between a copy's imports and the table, one line each.
fn differences(copy: &str, imports: &Imports, table: &Imports) -> Vec<String> {
    let mut differences = Vec::new();
    for (name, signature) in imports {
        match table.get(name) {
            None => differences.push(format!("{copy} has {name}{signature}, which sdk/abi.txt does not list")),
            Some(listed) if listed != signature => {
                differences.push(format!("{copy} has {name}{signature}, sdk/abi.txt lists {name}{listed}"))
            }
            Some(_) => {}
        }
    }
    for (name, listed) in table {
        if !imports.contains_key(name) {
            differences.push(format!("{copy} lacks {name}{listed}, listed in sdk/abi.txt"));
        }
    }
    differences
}

fn assert_matches_table(copy: &str, imports: &Imports) {
    let differences = differences(copy, imports, &table());
    assert!(differences.is_empty(), "{copy} differs from sdk/abi.txt:\n{}", differences.join("\n"));
}

fn wasm_type(ty: ValType) -> String {
    match ty {
        ValType::I32 => "i32".into(),
        ValType::I64 => "i64".into(),
        other => format!("{other:?}"),
    }
}

/// The functions a module imports from `env`, with their types.
fn env_imports(wasm: &[u8]) -> Imports {
    let mut types = Vec::new();
    let mut imports = Imports::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("a valid module") {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.unwrap().into_types() {
                        types.push(sub.composite_type.inner);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.unwrap();
                    if import.module != "env" {
                        continue;
                    }
                    let (TypeRef::Func(index) | TypeRef::FuncExact(index)) = import.ty else {
                        panic!("env.{} is not a function: {:?}", import.name, import.ty)
                    };
                    let wasmparser::CompositeInnerType::Func(func) = &types[index as usize] else {
                        panic!("env.{}: type {index} is not a function type", import.name)
                    };
                    assert!(func.results().len() <= 1, "env.{}: several results", import.name);
                    let signature = Signature {
                        params: func.params().iter().copied().map(wasm_type).collect(),
                        result: func.results().first().copied().map(wasm_type),
                    };
                    imports.insert(import.name.to_owned(), signature);
                }
            }
            _ => {}
        }
    }
    imports
}

/// The names a source file declares with `marker` in front (`pub fn `,
/// `TF_HOSTCALL(`): every `hostcall_*` it lists.
fn declared_names(source: &str, marker: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(marker))
        .filter(|rest| rest.starts_with("hostcall_"))
        .map(|rest| rest[..rest.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(rest.len())].to_owned())
        .collect()
}

fn assert_names_match_table(copy: &str, names: &[String]) {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "{copy} declares a hostcall twice: {names:?}");
    let listed: Vec<String> = table().into_keys().collect();
    assert_eq!(sorted, listed, "{copy} declares other hostcalls than sdk/abi.txt lists");
}

/// An upload answer with no warning (an import the node does not know is
/// one) of a Terrafirma guest.
fn assert_deployed_cleanly(what: &str, resp: &Resp) {
    let json = resp.json();
    assert_eq!(json["abi"], "terrafirma", "{what}: {json}");
    let warnings = json["warnings"].as_array().unwrap_or_else(|| panic!("{what}: no warnings array: {json}"));
    assert!(warnings.is_empty(), "{what}: the node warns: {json}");
}

#[test]
fn the_table_lists_every_hostcall_the_host_registers() {
    assert_matches_table("the host (src/abi/terrafirma/)", &host_registrations());
}

/// The table against the host itself: a wrong type fails the upload with a
/// link error, a name the host does not have gives a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_importing_the_whole_table_deploys_without_warnings() {
    let mut wat = String::from("(module\n");
    for (name, signature) in table() {
        let params = if signature.params.is_empty() { String::new() } else { format!(" (param {})", signature.params.join(" ")) };
        let result = signature.result.map(|r| format!(" (result {r})")).unwrap_or_default();
        wat.push_str(&format!("  (import \"env\" \"{name}\" (func{params}{result}))\n"));
    }
    wat.push_str("  (memory (export \"memory\") 1)\n  (func (export \"run\")))\n");

    let node = TestNode::start().await;
    let resp = node.deploy("_default", "all_imports", wat.clone()).await;
    assert!(resp.status == 201 || resp.status == 200, "the node refuses the table's imports:\n{wat}\n{resp:?}");
    assert_deployed_cleanly("the table's imports", &resp);
    assert_eq!(node.get("/all_imports").await.status, 200);
    node.stop().await;
}

/// A toolchain-built guest that imports every hostcall of one SDK: its
/// imports, then the node's answer to its upload and to a request.
async fn check_guest(copy: &str, file: &str) {
    let path = tokio::task::spawn_blocking(built_examples).await.unwrap().join(file);
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_matches_table(copy, &env_imports(&wasm));

    let node = TestNode::start_with(|config| config.limits.max_upload_bytes = 16 << 20).await;
    let name = file.strip_suffix(".wasm").unwrap();
    let resp = node.deploy_ok("_default", name, wasm).await;
    assert_deployed_cleanly(copy, &resp);
    let answer = node.get(&format!("/{name}")).await;
    assert_eq!((answer.status, answer.text()), (200, format!("{} hostcalls\n", table().len())), "{copy}: {answer:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_imports_the_table() {
    assert_names_match_table("sdk/rust/src/sys.rs", &declared_names(&read("sdk/rust/src/sys.rs"), "pub fn "));
    check_guest("the Rust SDK (sdk/rust/src/sys.rs, via examples/rust/all-imports)", "rust-all-imports.wasm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_header_imports_the_table() {
    let header = read("sdk/c/terrafirma.h");
    let names = declared_names(&header, "TF_HOSTCALL(");
    assert_names_match_table("sdk/c/terrafirma.h", &names);
    // Each import name is the name of the function declared after it.
    let declarations: Vec<_> = header.split("TF_HOSTCALL(hostcall_").skip(1).collect();
    for declaration in declarations {
        let import = &declaration[..declaration.find(')').unwrap()];
        let (_, after) = declaration.split_once('\n').unwrap();
        let function = after.split_once('(').unwrap().0.rsplit([' ', '*']).next().unwrap();
        assert_eq!(function, format!("hostcall_{import}"), "sdk/c/terrafirma.h: TF_HOSTCALL(hostcall_{import}) declares {function}");
    }
    check_guest("the C header (sdk/c/terrafirma.h, via examples/c/all_imports.c)", "c-all-imports.wasm").await;
}
