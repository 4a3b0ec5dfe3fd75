//! Fuzzing the node through its front doors, on stable Rust: modules made
//! by `wasm-smith` that import the real Terrafirma ABI and call it with
//! whatever arguments, in whatever order, uploaded and run; arbitrary and
//! mutated bytes uploaded. The node must never panic, answer every upload
//! `2xx` or `400`, answer every request with a status from the error table
//! (or one the guest chose), and keep serving.
//!
//! A short run is part of `cargo test`. For a long one:
//!
//! ```sh
//! TERRAFIRMA_FUZZ_ITERATIONS=5000 TERRAFIRMA_FUZZ_SEED=7 cargo test --release --test all fuzz:: -- --nocapture
//! ```

use std::collections::BTreeMap;

use arbitrary::Unstructured;
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};

use crate::harness::{Resp, TestNode};

/// The error table of `docs/errors.md`: `x-terrafirma-error` → status.
const ERRORS: [(&str, u16); 10] = [
    ("not-found", 404),
    ("trap", 500),
    ("fuel", 500),
    ("timeout", 504),
    ("memory", 500),
    ("overloaded", 503),
    ("body-too-large", 413),
    ("response-too-large", 500),
    ("request-timeout", 408),
    ("storage", 500),
];

fn iterations() -> usize {
    std::env::var("TERRAFIRMA_FUZZ_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(40)
}

fn rng() -> (u64, rand::rngs::StdRng) {
    let seed = std::env::var("TERRAFIRMA_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}

/// A module importing every function of `sdk/abi.txt` with its type: what
/// `wasm-smith` may import.
fn abi_imports() -> Vec<u8> {
    let table = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/abi.txt")).unwrap();
    let mut wat = String::from("(module\n");
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, rest) = line.split_once('(').unwrap();
        let (params, result) = rest.split_once(')').unwrap();
        let params: String = params.split(',').map(str::trim).filter(|p| !p.is_empty()).map(|p| format!(" {p}")).collect();
        let result = result.trim().strip_prefix("->").map(|r| format!(" (result {})", r.trim())).unwrap_or_default();
        wat.push_str(&format!("  (import \"env\" \"{name}\" (func (param{params}){result}))\n"));
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        available_imports: Some(abi_imports()),
        exports: Some(wat::parse_str(r#"(module (func (export "run")))"#).unwrap()),
        max_imports: 40,
        max_memories: 1,
        max_memory32_bytes: 4 << 20,
        max_tables: 2,
        max_table_elements: 10_000,
        max_funcs: 30,
        max_instructions: 400,
        min_funcs: 1,
        allow_start_export: false,
        // What the node's engine takes.
        gc_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        reference_types_enabled: false,
        relaxed_simd_enabled: false,
        ..wasm_smith::Config::default()
    }
}

/// Checks a request's answer against the contract; returns its status.
fn check_answer(node: &TestNode, resp: &Resp, module: &str, tally: &mut BTreeMap<String, usize>) {
    match resp.error_kind() {
        Some(kind) => {
            let status = ERRORS.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| panic!("unknown error kind {kind:?}: {resp:?}")).1;
            node.assert_error(resp, status, kind, module);
            *tally.entry(kind.to_owned()).or_default() += 1;
        }
        // The guest's own answer, whatever status it chose.
        None => *tally.entry(format!("guest {}", resp.status)).or_default() += 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_calling_the_abi_with_arbitrary_arguments_end_only_their_own_request() {
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 300;
        c.limits.fuel = 5_000_000;
        c.limits.max_response_bytes = 1 << 20;
    })
    .await;
    let (seed, mut rng) = rng();
    let config = smith_config();
    let mut tally = BTreeMap::new();
    for i in 0..iterations() {
        let mut bytes = vec![0u8; rng.random_range(64..8192)];
        rng.fill_bytes(&mut bytes);
        let Ok(module) = wasm_smith::Module::new(config.clone(), &mut Unstructured::new(&bytes)) else { continue };
        let wasm = module.to_bytes();
        let name = format!("m{i}");
        let upload = node.deploy("_default", &name, wasm.clone()).await;
        match upload.status {
            200 | 201 => {}
            400 => {
                assert!(upload.json()["error"].is_string(), "seed {seed}, module {i}: {upload:?}");
                *tally.entry("upload 400".to_owned()).or_default() += 1;
                continue;
            }
            _ => panic!("seed {seed}, module {i}: upload answered {upload:?}"),
        }
        let body = Bytes::from(bytes[..bytes.len().min(256)].to_vec());
        let resp = node.send("POST", &format!("/{name}/x?y=1"), None, &[("x-a", "b")], body).await;
        check_answer(&node, &resp, &name, &mut tally);
        node.admin("DELETE", &format!("/v1/sites/_default/modules/{name}"), &[], Bytes::new()).await;
    }
    eprintln!("fuzz (seed {seed}, {} modules): {tally:?}", iterations());
    assert!(tally.keys().any(|k| k.starts_with("guest")), "no generated module ran to its end: {tally:?}");
    node.assert_still_serving().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_and_mutated_uploads_are_answered_2xx_or_400() {
    let node = TestNode::start_with(|c| {
        c.limits.timeout_ms = 300;
        c.limits.fuel = 5_000_000;
    })
    .await;
    let (seed, mut rng) = rng();
    let config = smith_config();
    let mut tally = BTreeMap::new();
    for i in 0..iterations() {
        let mut bytes = vec![0u8; rng.random_range(16..4096)];
        rng.fill_bytes(&mut bytes);
        let upload: Vec<u8> = match i % 3 {
            // Noise behind a valid header.
            0 => [b"\0asm\x01\0\0\0".as_slice(), &bytes].concat(),
            // A valid module with a few bytes changed, or cut short.
            1 => {
                let Ok(module) = wasm_smith::Module::new(config.clone(), &mut Unstructured::new(&bytes)) else { continue };
                let mut wasm = module.to_bytes();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..wasm.len());
                    wasm[at] = rng.random();
                }
                if rng.random_bool(0.3) {
                    wasm.truncate(rng.random_range(0..wasm.len()));
                }
                wasm
            }
            // Text that starts like WAT.
            _ => [b"(module ".as_slice(), &bytes].concat(),
        };
        let name = format!("u{i}");
        let resp = node.deploy("_default", &name, upload).await;
        match resp.status {
            200 | 201 => {
                let answer = node.get(&format!("/{name}")).await;
                check_answer(&node, &answer, &name, &mut tally);
                node.admin("DELETE", &format!("/v1/sites/_default/modules/{name}"), &[], Bytes::new()).await;
            }
            400 => assert!(resp.json()["error"].is_string(), "seed {seed}, upload {i}: {resp:?}"),
            _ => panic!("seed {seed}, upload {i}: answered {resp:?}"),
        }
        *tally.entry(format!("upload {}", resp.status)).or_default() += 1;
    }
    eprintln!("fuzz (seed {seed}, {} uploads): {tally:?}", iterations());
    node.assert_still_serving().await;
    node.stop().await;
}
